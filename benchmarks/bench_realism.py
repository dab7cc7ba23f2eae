"""How real the zoo's GMs look: one collection, or a build before and after a change.

Per GM, ``data_pipeline.realism`` against the collection's own held-out real crops: SWD x1e3 of
Laplacian-pyramid patches (lower = more real) and C2ST, the accuracy of a linear real-vs-GM
classifier (0.5 = indistinguishable). Both ends are shown: real crops against real crops at the
same sample size, and (when the build recorded it) the same GMs untrained. With ``--before``,
the two collections must share the build seed (the same specs, the same real crops): the GMs
are compared one by one, and a paired sign-flip permutation test says whether the median
change is more than chance. A figure puts one GM per family before beside after
(``benchmarks/figures/realism_grids.png``).

With ``--beside``, another collection of other GMs (e.g. the default beside the wide one) is
measured the same way and shown family by family beside it: medians, not pairs.

Usage: python benchmarks/bench_realism.py [--collection AFTER] [--before PATH | --beside PATH] [--figure PATH]
"""

from __future__ import annotations

import time
from pathlib import Path

import common

FIGURE = common.REPO_ROOT / "benchmarks" / "figures" / "realism_grids.png"


def paired_p(diff, n_shuffles: int = 20_000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p of the mean paired difference (vectorized)."""
    import numpy as np

    d = np.asarray(diff, dtype=float)
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_shuffles, len(d)))
    null = np.abs((signs * d).mean(axis=1))
    return float((1 + (null >= abs(d.mean()) - 1e-12).sum()) / (n_shuffles + 1))


def figure(before, after, per_gm, path: Path) -> None:
    """One GM per family (the family's median GM after): its grid before (left) and after (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    picks = []
    for _, g in per_gm.groupby("family"):
        g = g.sort_values("swd_after")
        picks.append(g.iloc[len(g) // 2])
    cols = 2 if before is not None else 1
    fig, axes = plt.subplots(len(picks), cols, figsize=(5.2 * cols, 2.0 * len(picks)), squeeze=False)
    for row, r in zip(axes, picks):
        for ax, col, when in zip(row, [c for c in (before, after) if c is not None], ["before", "after"][-cols:]):
            ax.imshow(Image.open(Path(col.path) / "grids" / f"{r['gm_id']}.png"))
            ax.set_title(f"{r['gm_id']} ({when}): SWD {r['swd_' + when]:.0f}", fontsize=8)
            ax.axis("off")
    fig.suptitle("GM samples (left block) beside real crops (right block)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    t_start = time.time()
    ap = common.base_args(__doc__)
    ap.add_argument("--before", help="a collection built before the change (same build seed)")
    ap.add_argument("--beside", help="a collection of other GMs to show beside it (unpaired, per family)")
    ap.add_argument("--figure", default=str(FIGURE), help="where the before/after grids go")
    args = ap.parse_args()
    common.one_torch_thread()
    from gmparse.data_pipeline.collection import open_collection
    from gmparse.data_pipeline.realism import collection_realism

    after = common.get_collection(args.collection)
    if args.before and args.beside:
        ap.error("--before (the same GMs, paired) or --beside (other GMs), not both")
    before = open_collection(args.before) if args.before else None
    beside = open_collection(args.beside) if args.beside else None
    n = int(after.manifest.get("build", {}).get("images_per_gm", 256))
    t_after, cal = collection_realism(after, per_gm=n)
    per_gm = t_after.rename(columns={"swd": "swd_after", "c2st": "c2st_after"})
    if before is not None:
        t_before, _ = collection_realism(before, per_gm=n)
        per_gm = per_gm.merge(t_before.rename(columns={"swd": "swd_before", "c2st": "c2st_before"}),
                              on=["gm_id", "family"], how="outer")
    fake = after.fake_gms.set_index("gm_id")
    untrained = fake["realism_swd_untrained"] if "realism_swd_untrained" in fake else None

    def row(name, g):
        r = [name, int(g["swd_after"].notna().sum())]
        if before is not None:
            both = g.dropna(subset=["swd_before", "swd_after"])
            r += [int(g["swd_before"].notna().sum()), g["swd_before"].median(), g["swd_after"].median(),
                  float((both["swd_after"] < both["swd_before"]).mean()) if len(both) else None,
                  g["c2st_before"].median(), g["c2st_after"].median()]
        else:
            r += [g["swd_after"].median(), g["c2st_after"].median()]
        if untrained is not None:
            r.append(float(untrained.reindex(g["gm_id"]).median()))
        return r

    if beside is not None:
        t_side, _ = collection_realism(beside, per_gm=n)
        side = dict(list(t_side.groupby("family")) + [("all GMs", t_side)])

        def row(name, g, _row=row):  # noqa: F811 - the beside columns first
            s_ = side.get(name)
            lead = [len(s_), s_["swd"].median(), s_["c2st"].median()] if s_ is not None else [0, None, None]
            return [name, *lead, *_row(name, g)[1:]]
    rows = [row(fam, g) for fam, g in per_gm.groupby("family")] + [row("all GMs", per_gm)]
    if beside is not None:
        columns = ["family", f"GMs ({common.collection_label(beside).split(':')[0]})", "SWD", "C2ST",
                   f"GMs ({common.collection_label(after).split(':')[0]})", "SWD", "C2ST"]
    elif before is not None:
        columns = ["family", "GMs after", "GMs before", "SWD before", "SWD after", "GMs closer to real",
                   "C2ST before", "C2ST after"]
    else:
        columns = ["family", "GMs", "SWD", "C2ST"]
    if untrained is not None:
        columns.append("SWD untrained (after build)")
    notes = [f"Real crops against real crops ({n} images): SWD {cal['real_swd']:.0f}, C2ST {cal['real_c2st']:.2f}: "
             "the floor a GM as real as the photos would reach."]
    if before is not None:
        both = per_gm.dropna(subset=["swd_before", "swd_after"])
        diff = both["swd_after"] - both["swd_before"]
        notes.append(f"Paired over the {len(both)} GMs in both builds: SWD change mean {diff.mean():+.0f}, median "
                     f"{diff.median():+.0f}, sign-flip permutation p = {paired_p(diff):.2g}.")
        notes.append(f"before: {common.collection_label(before)}; after: {common.collection_label(after)}.")
    if beside is not None:
        notes.append(f"beside (other GMs, unpaired): {common.collection_label(beside)}; then "
                     f"{common.collection_label(after)}.")
    fig = Path(args.figure).resolve()
    figure(before, after, per_gm, fig)
    shown = fig.relative_to(common.REPO_ROOT) if fig.is_relative_to(common.REPO_ROOT) else fig  # --figure may be anywhere
    notes.append(f"Grids, one GM per family (its median GM after): {shown}.")
    section = common.Section(
        name="realism",
        title="Realism of the zoo's GMs (SWD x1e3, lower = more real; C2ST, 0.5 = indistinguishable)",
        how=("data_pipeline.realism.collection_realism: each GM's images against the collection's own real crops "
             "(SWD of 7x7 Laplacian-pyramid patches, 32 per image, 128 projections x 4; C2ST: 5-fold logistic "
             "regression on fixed image statistics), medians per family."),
        columns=columns, rows=rows, notes=notes,
    )
    common.finish(section, args, t_start)


if __name__ == "__main__":
    main()
