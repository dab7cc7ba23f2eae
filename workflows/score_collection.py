"""Train once, test anywhere, without training: score a saved parser on every GM of a collection.

    python workflows/score_collection.py PATH [--model models:/gm-parser@champion | DIR]
        [--train-collection TRAIN] [--fit-mode tile|crop|resize] [--seed 0]

``cv_folds.py --test-collection PATH`` trains the final parser and then scores it; this scores a
parser that already exists (the registered champion by default) in a minute or two. The table is
the main job's: FEN+PN beside the classical baseline trained on the parser's training collection
and random ground truth, pooled over the test collection's GMs, with p-values. The training
collection is ``--train-collection``, else the one the registered version is tagged with, else
the default preset's. The table is logged to MLflow as a run of its own (``tables/external.*``).

``--challenge`` judges a registered parser of another alias against ``gm-parser@champion`` on the
same GMs, as the main job does for ``--alias`` (e.g. the wide preset's ``@wide``): it takes
``champion`` only by a higher parsing score there (``registry.challenge_champion``). This is how a
parser trained before the external collection was built gets judged, without training it again:

    python workflows/score_collection.py data/collections/external-... --model models:/gm-parser@wide --challenge
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from gmparse.workflows.lib.runtime import die

FIT_MODES = ("tile", "crop", "resize")


def get_args_parser() -> argparse.ArgumentParser:
    from gmparse.workflows.lib.image_parsing import DEFAULT_PARSER

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("test_collection", help="collection whose GMs are scored (zoo, external or ingested)")
    p.add_argument("--model", default=DEFAULT_PARSER, help="parser: MLflow model URI or directory")
    p.add_argument("--train-collection", help="the parser's training collection (for the classical baseline and "
                   "the label scale); default: the registered version's tag, else the default preset's")
    p.add_argument("--fit-mode", default="tile", choices=FIT_MODES, help="images of another size than the model's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shuffles", type=int, default=2000, help="shuffles for the p-values")
    p.add_argument("--baseline-images-per-gm", type=int, default=96)
    p.add_argument("--experiment", default="gmparse-test", help="MLflow experiment of the logged run")
    p.add_argument("--challenge", action="store_true", help="--model (a registered gm-parser version) takes "
                   "gm-parser@champion when it parses these GMs better than the champion (a paired head-to-head)")
    return p


def model_version(ref: str):
    """The registry's version behind ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``, or None
    (a directory, no registry, no such alias or version)."""
    if not ref.startswith("models:/"):
        return None
    import mlflow

    from gmparse.workflows.lib.runtime import tracking_uri

    name, _, alias = ref.removeprefix("models:/").partition("@")
    name, _, version = name.partition("/")
    client = mlflow.MlflowClient(tracking_uri())
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except Exception:  # no registry, no such alias or version
        return None


def registered_collection(ref: str) -> str | None:
    """The ``collection`` tag of a ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` version, if any."""
    mv = model_version(ref)
    return None if mv is None else mv.tags.get("collection")


def challenger_of(ref: str) -> tuple[str, str]:
    """``--challenge``'s model: (its alias or "v<VERSION>", its version); ValueError unless a registered gm-parser."""
    from gmparse.workflows.lib.registry import PARSER_NAME

    mv = model_version(ref)
    if mv is None or mv.name != PARSER_NAME:
        raise ValueError(f"--challenge needs a registered parser (models:/{PARSER_NAME}@ALIAS or "
                         f"models:/{PARSER_NAME}/VERSION in this tracking store), got {ref!r}")
    alias = ref.partition("@")[2]
    return alias or f"v{mv.version}", str(mv.version)


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one model, dozens of files
    import mlflow

    from gmparse.data_pipeline.build_config import build_config
    from gmparse.data_pipeline.collection import CollectionError, open_collection
    from gmparse.models.parser import META_FILE, Parser
    from gmparse.workflows.lib.evaluation import external_table
    from gmparse.workflows.lib.image_parsing import ModelLoadError, resolve_model_dir
    from gmparse.workflows.lib.registry import challenge_champion
    from gmparse.workflows.lib.runtime import tracking_uri

    try:
        alias, version = challenger_of(args.model) if args.challenge else ("", "")
    except ValueError as e:
        die(str(e))
    try:
        test_col = open_collection(args.test_collection)
        if test_col.fake_gms.empty:
            die(f"{args.test_collection} has no GMs to score")
        train_path = args.train_collection or registered_collection(args.model) or build_config("default").default_path()
        train_col = open_collection(train_path)
        with tempfile.TemporaryDirectory() as tmp:
            parser = Parser.load(resolve_model_dir(args.model, META_FILE, Path(tmp)))
    except (CollectionError, ModelLoadError, FileNotFoundError) as e:
        die(str(e))
    rows, text = external_table(parser, train_col, test_col, fit_mode=args.fit_mode,
                                baseline_images_per_gm=args.baseline_images_per_gm, seed=args.seed,
                                n_shuffles=args.shuffles)
    print(f"Parser {args.model} (trained on {train_col.path}), tested on every GM of {test_col.path} "
          f"({len(test_col.fake_gms)} GMs, {test_col.image_size} px images fed as '{args.fit_mode}'):")
    print(text, flush=True)
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(args.experiment)
    with mlflow.start_run(run_name=f"test-{Path(str(test_col.path)).name}") as run:
        mlflow.log_params({"model": args.model, "train_collection": str(train_col.path),
                           "test_collection": str(test_col.path), "fit_mode": args.fit_mode, "seed": args.seed})
        mlflow.log_dict(rows, "tables/external.json")
        mlflow.log_text(text, "tables/external.txt")
        if args.challenge:
            judged = challenge_champion(parser, version, test_col, alias=alias,
                                        fit_mode=args.fit_mode, seed=args.seed, n_shuffles=args.shuffles)
            if judged is not None:
                mlflow.log_dict(judged[0], "tables/vs_champion.json")
                mlflow.log_text(judged[1], "tables/vs_champion.txt")
    print(f"logged: MLflow run {run.info.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
