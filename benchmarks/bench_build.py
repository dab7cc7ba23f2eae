"""Collection build: GMs per minute and images/s per core, scaling from 1 to 2 Ray workers.

``data_pipeline.build.build_collection`` (one Ray task per GM) into a scratch folder, for the
smoke preset and the default and large (64x64) presets with fewer GMs (``n_gms`` reduced so it ends in minutes;
everything else as the preset), each with ``ray.init(num_cpus=1)`` and ``ray.init(num_cpus=2)``
on the same GMs (same seed). Ray start-up is excluded; the build's own set-up (real photos,
crops) is included. images/s per core counts the GMs' images (not the real crops) over the
build's wall time and the Ray CPUs. The full default collection's ``build_seconds`` is read from
its manifest.json under data/collections/ when one was built with the preset's current settings
(its build key; collections of older settings are left out).

Usage: python benchmarks/bench_build.py [--quick] [--smoke-gms 16] [--default-gms 4] [--large-gms 4] [--cpus 1 2]
"""

from __future__ import annotations

import json
import shutil
import time

import common


def build_once(preset: str, n_gms: int, cpus: int) -> dict[str, float]:
    from gmparse.data_pipeline.build import build_collection, build_config

    cfg = build_config(preset, n_gms=n_gms, gpus_per_gm=0.0)  # CPU cores: what this benchmark scales
    out = common.WORK_DIR / "build" / f"{preset}-{n_gms}-cpu{cpus}"
    if out.exists():
        shutil.rmtree(out)
    with common.ray_session(cpus) as startup:
        t0 = time.perf_counter()
        col = build_collection(cfg, out, overwrite=True, progress=False)
        secs = time.perf_counter() - t0
    gms = int(col.manifest["counts"]["gms"])
    images = gms * cfg.images_per_gm
    timings = col.manifest["gm_timings"]  # machine-dependent, so in the manifest, not in gms.parquet
    fake = col.fake_gms.assign(train_seconds=lambda d: [timings[g]["train_seconds"] for g in d["gm_id"]])
    per_gm = fake.groupby("family")["train_seconds"].mean().to_dict()  # one core's seconds per kept GM
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": secs, "gms": gms, "requested": n_gms, "images": images, "ray_startup_s": startup,
            "gms_per_min": 60 * n_gms / secs, "images_per_s_per_core": images / secs / cpus,
            "family_seconds": per_gm}


def project_full(preset: str, family_seconds: dict[str, float], cores: int = 16) -> tuple[float, dict[str, int]]:
    """Minutes the preset's full build would take on ``cores`` (one GM per core at a time): each of
    its GMs' families at the measured one-core seconds per GM (families not measured at their
    mean). A projection from measured per-GM costs, not a measurement on that many cores."""
    from collections import Counter

    from gmparse.data_pipeline import zoo
    from gmparse.data_pipeline.build_config import build_config

    cfg = build_config(preset)
    counts = Counter(s.family for s in zoo.sample_specs(cfg.n_gms, cfg.seed, cfg.image_size))
    mean = sum(family_seconds.values()) / len(family_seconds)
    total = sum(n * family_seconds.get(f, mean) for f, n in counts.items())
    return total / cores / 60, dict(counts)


def full_default_manifests() -> list[dict]:
    from gmparse.data_pipeline.build_config import BUILD_PRESETS

    full = BUILD_PRESETS["default"]
    out = []
    for m in sorted((common.REPO_ROOT / "data" / "collections").glob("*/manifest.json")):
        try:
            man = json.loads(m.read_text())
        except (OSError, ValueError):
            continue
        b = man.get("build", {})
        if man.get("build_key") == full.key() and man.get("build_seconds"):  # what the preset builds today
            out.append({"path": str(m.parent.relative_to(common.REPO_ROOT)), "seconds": float(man["build_seconds"]),
                        "gms": int(man["counts"]["gms"]), "requested": int(b["n_gms"]),
                        "images": int(man["counts"]["gms"]) * int(b["images_per_gm"])})
    return out


def main() -> None:
    t_start = time.time()
    ap = common.base_args(__doc__)
    ap.add_argument("--smoke-gms", type=int, default=None, help="GMs of the smoke build (16; quick 4)")
    ap.add_argument("--default-gms", type=int, default=None, help="GMs of the reduced default build (4; quick 2)")
    ap.add_argument("--large-gms", type=int, default=None, help="GMs of the reduced large build, 64x64 (4; quick 0)")
    ap.add_argument("--cpus", type=int, nargs="+", default=[1, 2], help="Ray num_cpus to compare")
    args = ap.parse_args()
    common.one_torch_thread()
    plans = [("smoke", args.smoke_gms or (4 if args.quick else 16)),
             ("default", args.default_gms or (2 if args.quick else 4)),
             ("large", args.large_gms if args.large_gms is not None else (0 if args.quick else 4))]
    plans = [(p, n) for p, n in plans if n > 0]
    rows, targets, notes = [], [], []
    for preset, n in plans:
        # quick: the default preset's GMs train ~10x longer, so only at the most CPUs (no scaling row)
        cpu_list = [max(args.cpus)] if args.quick and preset == "default" else args.cpus
        res = {}
        for cpus in cpu_list:
            r = res[cpus] = build_once(preset, n, cpus)
            print(f"{preset} {n} GMs, num_cpus={cpus}: {r['seconds']:.1f} s", flush=True)
        base = res[cpu_list[0]]
        if preset == "large":  # GMs are independent one-core tasks: 400 of them over 16 cores
            minutes, counts = project_full("large", base["family_seconds"])
            per = ", ".join(f"{f} {v:.0f} s" for f, v in sorted(base["family_seconds"].items()))
            notes.append(f"large, one core's seconds per GM by family (train + gate + 1,000 samples): {per}. The "
                         f"full preset's 400 GMs ({', '.join(f'{n} {f}' for f, n in sorted(counts.items()))}) at "
                         f"these costs on 16 cores: ~{minutes:.0f} min - a projection from the measured per-GM "
                         "costs (the GMs are independent one-core tasks), not a 16-core measurement.")
        for cpus in cpu_list:
            r = res[cpus]
            speedup = base["seconds"] / r["seconds"]
            rows.append([preset, f"{r['requested']} ({r['gms']} kept)", cpus, r["seconds"], r["gms_per_min"],
                         r["images_per_s_per_core"], speedup, speedup / (cpus / cpu_list[0]), r["ray_startup_s"]])
    fulls = full_default_manifests()
    for f in fulls:
        rows.append([f"default (full, {f['path']})", f"{f['requested']} ({f['gms']} kept)", "?", f["seconds"],
                     60 * f["requested"] / f["seconds"], "—", "", "", "manifest"])
    if not fulls:
        notes.append("no full default collection under data/collections/ yet: its build_seconds appear here after "
                     "`.venv/bin/python workflows/build_collection.py --preset default` (or `make run`).")
    notes.append("GMs/min counts requested GMs (a rejected GM costs its training too). Scaling = speed-up / "
                 "CPU ratio; GM training times differ by family, so few GMs on 2 CPUs can leave one idle.")
    section = common.Section(
        name="build",
        title="Collection build (build_collection, one Ray task per GM)",
        how="Builds into a scratch folder; the same GMs (same seed) for every num_cpus; Ray start-up excluded "
            "(shown in its own column).",
        columns=["preset", "GMs", "Ray num_cpus", "seconds", "GMs/min", "images/s per core", "speed-up",
                 "scaling efficiency", "Ray start-up s"],
        rows=rows,
        targets=targets,
        notes=notes,
    )
    common.finish(section, args, t_start)


if __name__ == "__main__":
    main()
