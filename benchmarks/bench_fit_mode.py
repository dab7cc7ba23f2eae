"""Images of another resolution than the parser's: resize vs centre crop vs tiles, measured.

    python benchmarks/bench_fit_mode.py --test-collection data/collections/ext64-s11 \\
        [--train-collection PATH] [--model models:/gm-parser@champion]

Scores the registered parser (and the classical baseline trained on every GM of the training
collection) on every GM of the test collection with ``workflows.lib.evaluation.external_table``,
once per ``data_pipeline.preprocess.fit_to_size`` mode, and prints the headline rows side by
side. Resizing a larger image low-passes it, and with it the artefacts a parser reads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gmparse.data_pipeline.build_config import build_config
from gmparse.data_pipeline.collection import open_collection
from gmparse.data_pipeline.preprocess import FIT_MODES

ROWS = ("continuous/l1", "discrete/acc", "discrete/f1", "loss/auc", "discrete/acc/upsampling")


def load_parser(ref: str):
    from gmparse.models.parser import Parser

    if Path(ref).is_dir():
        return Parser.load(ref)
    import mlflow

    from gmparse.workflows.lib.runtime import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.pyfunc.load_model(ref).unwrap_python_model().parser


def main(argv: list[str] | None = None) -> int:
    from gmparse.workflows.lib.evaluation import external_table

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--test-collection", required=True)
    p.add_argument("--train-collection", help="default: the default preset's zoo")
    p.add_argument("--model", default="models:/gm-parser@champion", help="MLflow model URI or Parser directory")
    p.add_argument("--shuffles", type=int, default=2000)
    args = p.parse_args(argv)
    train = open_collection(args.train_collection or build_config("default").default_path())
    test = open_collection(args.test_collection)
    parser = load_parser(args.model)
    print(f"parser {args.model} ({parser.config.image_size} px), trained on {train.path}; "
          f"test {test.path}: {len(test.fake_gms)} GMs at {test.image_size} px")
    results = {}
    for mode in FIT_MODES:
        t0 = time.time()
        rows, _ = external_table(parser, train, test, fit_mode=mode, baseline_images_per_gm=96, seed=0,
                                 n_shuffles=args.shuffles)
        results[mode] = {r["metric"]: r for r in rows}
        print(f"  {mode}: {time.time() - t0:.1f} s", flush=True)
    print(f"\n{'metric (GM level)':26}" + "".join(f" {m + ' FEN+PN (p)':>22} {m + ' classic':>15}" for m in FIT_MODES))
    for k in ROWS:
        print(f"{k:26}" + "".join(f" {results[m][k]['fen_pn']:>13.3f} ({results[m][k]['p_fen_pn_vs_random']:.3f})"
                                  f" {results[m][k]['classical']:>15.3f}" for m in FIT_MODES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
