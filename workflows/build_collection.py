"""Build a GM collection from the zoo, or ingest an existing one (image folders + labels).

    python workflows/build_collection.py --preset smoke|default|wide|large [--out PATH] [--seed 1] [--real-dir DIR]
    python workflows/build_collection.py --preset wide --n-gms 640   # grows: reuses the 320-GM build's GMs
    python workflows/build_collection.py --from-folder DIR --labels labels.csv --out PATH
    python workflows/build_collection.py --from-folder DIR --labels ground_truth_net_116_15dim.npy \
        --gm-names names.txt --out PATH
    python workflows/build_collection.py --realism PATH [--realism-csv per_gm.csv]   # measure a built one
    python workflows/build_collection.py --external [--out PATH]   # GMs written from their papers, for testing
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gmparse.data_pipeline.build_config import BUILD_PRESETS, BuildConfig, build_config
from gmparse.workflows.lib.cli import add_dataclass_args, load_overrides, resolve
from gmparse.workflows.lib.runtime import die, init_ray


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
    p.add_argument("--realism", metavar="PATH", help="measure how real the GMs of an existing collection look "
                   "(SWD and C2ST against its own real images) and exit")
    p.add_argument("--realism-csv", help="with --realism: also write the per-GM table here")
    p.add_argument("--external", action="store_true", help="build the external test collection (DCGAN, LSGAN, "
                   "SNGAN, WGAN-GP and two VAEs written from their papers, no zoo code) instead of a zoo")
    add_dataclass_args(p, BuildConfig, "zoo build (overrides the preset)", skip=("preset",), presets=BUILD_PRESETS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    # imported once the arguments parse (--help stays fast): the zoo loads torch
    from gmparse.data_pipeline.build import build_collection, summarize
    from gmparse.data_pipeline.collection import CollectionError, is_local, open_collection, publish
    from gmparse.data_pipeline.ingest import IngestError, ingest_folder

    try:
        if args.realism:
            return measure_realism(args.realism, args.realism_csv)
        if args.external:
            return build_external(args.out, args.overwrite)
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
        if args.out and not is_local(args.out):  # object storage: build in the local default folder
            # (stable, so a killed build resumes there), then upload, manifest last
            built = build_collection(cfg, cfg.default_path(), overwrite=True)
            publish(built.path, args.out)
            col = open_collection(args.out)
        else:
            col = build_collection(cfg, Path(args.out) if args.out else cfg.default_path(), overwrite=args.overwrite)
    except (CollectionError, IngestError, FileNotFoundError) as e:
        die(str(e))
    m = col.manifest
    print(json.dumps(summarize(col), indent=1))
    print(f"collection: {col.path}")
    run = m.get("last_run", {})
    if run:
        idle = f", {run['idle_share']:.0%} of {run['cores']:g} cores idle" if "idle_share" in run else ""
        print(f"this run built {run['gms_built_here']} GMs and reused {run['gms_reused']}{idle}")
    print(f"built {m['counts']['gms']} GMs ({m['counts']['gms_rejected']} rejected by the quality gate, "
          f"{m['counts']['gate_retries']} retries), {m['counts']['images']} images in {m['build_seconds']} s; "
          f"gate improvement median {m['quality']['improvement_median']:.3g}, worst {m['quality']['improvement_worst']:.3g}")
    print(realism_text(m["realism"]))
    return 0


def realism_text(r: dict) -> str:
    """The realism summary a person reads after a build (lower SWD = more real)."""
    swd, c2st = r["swd"], r["c2st"]
    fams = ", ".join(f"{k} {v:.0f}" for k, v in sorted(swd["per_family"].items()))
    untrained = f", untrained GMs {r['swd_untrained_median']:.0f}" if "swd_untrained_median" in r else ""
    return (f"realism SWD x1e3 (lower = more real; real vs real {r['real_swd']:.0f}{untrained}): median "
            f"{swd['median']:.0f}, worst {swd['worst']:.0f} ({swd['worst_gm']}); per family median: {fams}\n"
            f"realism C2ST accuracy (0.5 = indistinguishable; real vs real {r['real_c2st']:.2f}): median "
            f"{c2st['median']:.2f}, worst {c2st['worst']:.2f}")


def build_external(out: str | None, overwrite: bool) -> int:
    from gmparse.data_pipeline.external_gms import (
        ExternalConfig,
        build_external_collection,
        default_external_path,
    )

    cfg = ExternalConfig()
    path = Path(out) if out else default_external_path(cfg)
    init_ray()
    col = build_external_collection(path, cfg, overwrite=overwrite)
    m = col.manifest
    for _, r in col.fake_gms.iterrows():
        print(f"{r['gm_id']}: {r['paper']}, {int(r['train_steps'])} steps, realism SWD {r['realism_swd']:.0f}")
    print(f"collection: {col.path} ({m['counts']['gms']} GMs, {m['counts']['gms_rejected']} short of the realism "
          f"threshold, {m['build_seconds']} s)")
    print(realism_text(m["realism"]))
    return 0


def measure_realism(path: str, csv: str | None) -> int:
    from gmparse.data_pipeline.collection import open_collection
    from gmparse.data_pipeline.realism import collection_realism, realism_summary

    col = open_collection(path)
    per_gm, cal = collection_realism(col, per_gm=int(col.manifest.get("build", {}).get("images_per_gm", 256)))
    if per_gm.empty:
        die(f"{path} has no GM with enough images to measure")
    if csv:
        per_gm.to_csv(csv, index=False)
    print(f"{col.path}: {len(per_gm)} GMs against {col.manifest['counts'].get('real_images', '?')} real images")
    print(realism_text(realism_summary(per_gm, cal)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
