"""Build a GM collection from the zoo, or ingest an existing one (image folders + labels).

    python workflows/build_collection.py --preset smoke [--out PATH] [--seed 1] [--real-dir DIR]
    python workflows/build_collection.py --from-folder DIR --labels labels.csv --out PATH
    python workflows/build_collection.py --from-folder DIR --labels ground_truth_net_116_15dim.npy \
        --gm-names names.txt --out PATH
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_pipeline.build import BUILD_PRESETS, BuildConfig, build_collection, build_config, summarize  # noqa: E402
from data_pipeline.collection import CollectionError, is_local, open_collection, publish  # noqa: E402
from data_pipeline.ingest import IngestError, ingest_folder  # noqa: E402
from workflows.cli import add_dataclass_args, load_overrides, resolve  # noqa: E402
from workflows.runtime import die, init_ray  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="smoke", help=f"zoo preset: {sorted(BUILD_PRESETS)}")
    p.add_argument("--out", help="collection folder (default: data/collections/<preset>-...)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing collection at --out")
    p.add_argument("--config", help="JSON/YAML file of BuildConfig overrides")
    p.add_argument("--from-folder", help="ingest: one image folder per GM (+ optional 'real')")
    p.add_argument("--labels", help="ingest: label table (.csv, .json, or RED116 .npy)")
    p.add_argument("--gm-names", help="ingest: GM folder names, one per RED116 matrix row")
    p.add_argument("--loss-labels", help="ingest: RED116 loss matrix (default: sibling ground_truth_loss_116_9dim.npy)")
    add_dataclass_args(p, BuildConfig, "zoo build (overrides the preset)", skip=("preset",), presets=BUILD_PRESETS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        if args.from_folder:
            if not args.labels or not args.out:
                die("--from-folder needs --labels and --out")
            col = ingest_folder(args.from_folder, args.labels, args.out, image_size=args.image_size or 128,
                                gm_names=args.gm_names, loss_labels=args.loss_labels, overwrite=args.overwrite)
            m = col.manifest
            print(f"ingested {m['counts']['gms']} GMs, {m['counts']['images']} images into {col.path}; "
                  f"skipped {len(m['skipped'])} files (listed in manifest.json)")
            return 0
        try:
            cfg = resolve(build_config(args.preset), args, load_overrides(args.config))
        except ValueError as e:
            die(str(e))
        init_ray()
        if args.out and not is_local(args.out):  # object storage: build locally, then upload
            with tempfile.TemporaryDirectory() as tmp:
                built = build_collection(cfg, Path(tmp) / "collection", overwrite=True)
                publish(built.path, args.out)
            col = open_collection(args.out)
        else:
            col = build_collection(cfg, Path(args.out) if args.out else cfg.default_path(), overwrite=args.overwrite)
    except (CollectionError, IngestError, FileNotFoundError) as e:
        die(str(e))
    m = col.manifest
    print(json.dumps(summarize(col), indent=1))
    print(f"collection: {col.path}")
    print(f"built {m['counts']['gms']} GMs ({m['counts']['gms_rejected']} rejected by the quality gate, "
          f"{m['counts']['gate_retries']} retries), {m['counts']['images']} images in {m['build_seconds']} s; "
          f"gate improvement median {m['quality']['improvement_median']:.3g}, worst {m['quality']['improvement_worst']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
