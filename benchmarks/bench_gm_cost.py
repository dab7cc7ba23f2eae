"""What one GM of a build costs, by family and phase, before and after the wide preset's cut.

Runs the build's own per-GM task (``data_pipeline.build._make_gm_task``: train, gate, sample,
realism, PNG encoding, grid) in this process on one torch thread, then persists the GM as a
build does (``PartialBuild.write_gm``: shards, grid, record) into a scratch folder. Each phase is
this thread's CPU time, so the figures hold on a loaded machine (the GMs are one-core tasks).
"before": the default zoo preset (batch 32); "after": the wide preset's (batch 16, the same
steps and gate). Both on the same specs: the first GMs of each family of the wide preset's
sequence (every implementation), so each row is paired GM by GM.

Usage: python benchmarks/bench_gm_cost.py [--per-family 3] [--quick]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import common

PHASES = ("setup", "train", "gate_sample", "gate", "sample", "introspect", "realism", "encode", "grid", "write")


def measure(per_family: int, before: str, after: str) -> list[dict]:
    from gmparse.data_pipeline import zoo
    from gmparse.data_pipeline.build import _make_gm_task, _photo_pool, _record, _shard_rows, build_config
    from gmparse.data_pipeline.partial import PartialBuild
    from gmparse.data_pipeline.real_images import random_crops
    from gmparse.data_pipeline.realism import RealismReference

    cfg = build_config("wide")
    pool = _photo_pool(cfg)
    train_crops = random_crops(pool, cfg.train_crops, cfg.image_size, seed=cfg.seed)
    real_crops = random_crops(pool, cfg.real_images, cfg.image_size, seed=cfg.seed + 1_000_003)
    ref = RealismReference(real_crops, seed=cfg.seed)
    specs = zoo.sample_specs(cfg.n_gms, cfg.seed, cfg.image_size, cfg.implementation_tuple(), cfg.hidden_act,
                             cfg.family_mix)
    picked, seen = [], {}
    for i, s in enumerate(specs):
        if seen.get(s.family, 0) < per_family:
            seen[s.family] = seen.get(s.family, 0) + 1
            picked.append((i, s))
    _make_gm_task(picked[0][1], train_crops, 8, zoo.ZOO_PRESETS["smoke"], ref)  # warm-up (lazy imports)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        partial = PartialBuild(Path(tmp) / "col", "bench", {})
        for variant, preset in (("before", before), ("after", after)):
            for i, s in picked:
                t = time.thread_time()
                r = _make_gm_task(s, train_crops, cfg.images_per_gm, zoo.ZOO_PRESETS[preset], ref)
                pngs, grid = r["pngs"], r["grid"]
                rec = _record(i, r, "here", 0)
                tw = time.thread_time()
                partial.write_gm(rec, _shard_rows(cfg, i, rec.gm_id, pngs) if rec.status == "kept" else [], grid)
                phases = dict(rec.timing["phase_seconds"], write=time.thread_time() - tw)
                rows.append({"variant": variant, "gm_id": s.gm_id, "family": s.family,
                             "implementation": s.arch.implementation, "kept": rec.status == "kept",
                             "attempts": rec.result["attempts"], "swd": rec.result["realism"]["swd"],
                             "total": time.thread_time() - t, **{p: phases.get(p, 0.0) for p in PHASES}})
                print(f"{variant} {s.gm_id} ({s.arch.implementation}): {rows[-1]['total']:.1f} CPU-s, "
                      f"kept {rows[-1]['kept']}, SWD {rows[-1]['swd']:.0f}", flush=True)
    return rows


def main() -> None:
    t_start = time.time()
    ap = common.base_args(__doc__)
    ap.add_argument("--per-family", type=int, default=None, help="GMs per family (3; quick 1)")
    ap.add_argument("--before", default="default", help="zoo preset of the 'before' column")
    ap.add_argument("--after", default="wide", help="zoo preset of the 'after' column")
    args = ap.parse_args()
    common.one_torch_thread()
    import pandas as pd

    from gmparse.data_pipeline.zoo.specs import FAMILY_SHARES

    df = pd.DataFrame(measure(args.per_family or (1 if args.quick else 3), args.before, args.after))
    b, a = df[df.variant == "before"].set_index("gm_id"), df[df.variant == "after"].set_index("gm_id")
    rows = []
    shares = dict(FAMILY_SHARES)
    for fam in [f for f, _ in FAMILY_SHARES] + ["all (wide mix)"]:
        if fam == "all (wide mix)":
            w = {f: shares[f] for f in shares if f in set(df.family)}

            def mix(t: pd.DataFrame, col: str, w: dict = w) -> float:
                return float(sum(v * t[t.family == f][col].mean() for f, v in w.items()) / sum(w.values()))
            tb, ta = mix(b, "total"), mix(a, "total")
            ph = {p: mix(a, p) for p in PHASES}
            n, kb, ka = len(b), int(b.kept.sum()), int(a.kept.sum())
            swd_b, swd_a = float(b[b.kept].swd.median()), float(a[a.kept].swd.median())
        else:
            fb, fa = b[b.family == fam], a[a.family == fam]
            if fb.empty:
                continue
            tb, ta = float(fb.total.mean()), float(fa.total.mean())
            ph = {p: float(fa[p].mean()) for p in PHASES}
            n, kb, ka = len(fb), int(fb.kept.sum()), int(fa.kept.sum())
            swd_b, swd_a = float(fb[fb.kept].swd.median()), float(fa[fa.kept].swd.median())
        share = {p: ph[p] / max(ta, 1e-9) for p in PHASES}
        rows.append([fam, n, tb, ta, tb / ta, 3600 / tb, 3600 / ta, share["train"],
                     share["gate_sample"] + share["gate"], share["sample"], share["realism"],
                     share["encode"] + share["grid"] + share["write"], share["setup"], f"{kb}/{n}", f"{ka}/{n}",
                     swd_b, swd_a])
    paired = a.swd - b.swd.reindex(a.index)
    notes = [
        f"SWD after minus before, paired over the {len(paired)} GMs: mean {paired.mean():+.0f}, median "
        f"{paired.median():+.0f} (lower = more real).",
        "Phase shares are of the 'after' CPU time; 'write' is the driver's (shards, grid, record), the rest the "
        "GM task's. Sampling, realism, encoding and writing together are the cost that fewer images per GM "
        "could cut; training is the rest.",
        f"all (wide mix): families weighted by the wide preset's shares ({', '.join(f'{f} {v:.0%}' for f, v in FAMILY_SHARES)}).",
    ]
    section = common.Section(
        name="build_cost",
        title="Cost per GM by family and phase (CPU seconds, one core; before: default zoo, after: wide zoo)",
        how=__doc__.split("\n\n")[1].replace("\n", " "),
        columns=["family", "GMs", "CPU-s before", "CPU-s after", "speed-up", "GMs/core-h before", "GMs/core-h after",
                 "train", "gate", "sample", "realism", "encode+grid+write", "setup", "kept before", "kept after",
                 "median SWD before", "median SWD after"],
        rows=rows,
        notes=notes,
    )
    common.finish(section, args, t_start)


if __name__ == "__main__":
    main()
