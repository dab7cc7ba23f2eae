"""Parse images: predicted GM hyperparameters, fake probability and nearest known GM per image.

    python workflows/parse.py PATH... [--model models:/gm-parser@champion | DIR]
        [--detector models:/gm-detector@champion | DIR] [--attributor models:/gm-attributor@champion | DIR]
        [--json] [--report DIR] [--batch-size N]

PATHs are image files or folders (searched recursively). Every entry gets a line, ok or skipped
with its reason: missing, empty, unreadable, truncated, tiny or huge files, dangling symlinks,
symlink loops, hidden or symlinked folders (listed, not searched) are reported and skipped, never
fatal. Images run in this process: measured on 2 cores it was faster than
Ray Data batch inference at every size up to 4,096 files (``benchmarks/bench_parse.py``, Ray's
start-up and per-task costs outweigh the second core). ``--ray-threshold N`` sends more than N
images through Ray Data with an actor pool (``--actors``), for a cluster's cores or GPUs.

Models load from the MLflow registry (``models:/NAME@ALIAS`` or any MLflow model URI; the
weights are read from the logged artifact with ``torch.load(weights_only=True)``) or from a
local directory (``Parser.save`` / ``ForensicModel.save`` output, or a downloaded MLflow model).
The detector and attributor are optional: the registry champions are used when they exist.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from gmparse.workflows.lib.image_parsing import (
    DEFAULT_ATTRIBUTOR,
    DEFAULT_DETECTOR,
    DEFAULT_PARSER,
    MAX_PIXELS,
    MIN_SIDE,
    ModelLoadError,
    ReadLimits,
    expand_paths,
    format_table,
    load_models,
    parse_files,
    write_report,
)
from gmparse.workflows.lib.runtime import die, quiet_console


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--model", default=DEFAULT_PARSER, help="parser: MLflow model URI or directory")
    p.add_argument("--detector", help=f"detector URI or directory (default {DEFAULT_DETECTOR} when registered; "
                                      "'none' to skip)")
    p.add_argument("--attributor", help=f"attributor URI or directory (default {DEFAULT_ATTRIBUTOR} when "
                                        "registered; 'none' to skip)")
    p.add_argument("--json", action="store_true", help="print JSON (one object per file) instead of a table")
    p.add_argument("--report", help="write per-image figures and report.md into this folder")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--fit-mode", default="tile", choices=["resize", "crop", "tile"],
                   help="how an image of another size than the parser's reaches it (data_pipeline.preprocess."
                        "fit_to_size): tile (default) averages every native-resolution tile, crop takes the centre "
                        "one, resize low-passes the image (docs/decisions.md: measured)")
    p.add_argument("--ray-threshold", type=int, default=None,
                   help="more images than this go through Ray Data (default: none; in process measured faster "
                        "up to 4,096 files on 2 cores, benchmarks/RESULTS.md)")
    p.add_argument("--actors", type=int, default=1, help="Ray Data actor pool size")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="larger images are skipped")
    p.add_argument("--min-side", type=int, default=MIN_SIDE, help="smaller images are skipped")
    p.add_argument("--verbose", action="store_true", help="show MLflow's and Ray's own log lines and download bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.batch_size < 1:
        die("--batch-size must be >= 1")
    quiet_console(not args.verbose)
    paths = expand_paths(args.paths)
    if not paths:
        die(f"no files found under {args.paths}")
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            models, notes = load_models(args, Path(tmp))
        except ModelLoadError as e:
            die(str(e))
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    limits = ReadLimits(max_pixels=args.max_pixels, min_side=args.min_side)
    t_parse = time.time()
    results, mode = parse_files(paths, models, args.batch_size, args.ray_threshold, limits, args.actors, args.fit_mode)
    t_end = time.time()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_table(results))
    # on stderr, so --json output stays one JSON document
    print(f"({len(results)} file(s) in {t_end - t0:.1f} s: models loaded in {t_parse - t0:.1f} s, then "
          f"{len(results) / max(t_end - t_parse, 1e-9):.1f} images/s, {mode} inference)", file=sys.stderr)
    if args.report:
        md = write_report(results, models, Path(args.report))
        print(f"report: {md}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    sys.exit(main())
