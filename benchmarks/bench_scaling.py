"""Does FEN+PN learn with scale? The parsing curve: pooled GM-level metrics on unseen GMs against
the number of training GMs per fold, for FEN+PN, the classical baseline, the prior and random.

    python benchmarks/bench_scaling.py                       # the wide collection, sizes 12 .. all
    python benchmarks/bench_scaling.py --sizes 12,24 --seeds 2 --collection PATH

Protocol. The collection's GM-disjoint folds (the main job's, ``--folds``) fix the unseen GMs:
every point is scored on the same test GMs, each by the fold that never saw it, pooled over all
folds. A point trains on ``size`` of each fold's training GMs (``data_pipeline.folds.subsample_gms``:
stratified by family and implementation, nested within a seed, so "all" spans every
implementation), with the default job's model and step, in process (``diagnose_parsing.run_fold``,
no epoch picked: the last epoch's EMA is kept, as the main job does). Budget: the same image-steps
per GM at every size (``--epochs`` x ``--images-per-gm`` images of each training GM), so a point
costs in proportion to its GMs. The classical baseline and the image-blind prior learn from the
same GMs. Sizes up to ``--small`` run ``--seeds`` seeds (another draw of training GMs and another
initialization), the rest one.

Transfer: with the external collection (``--external``; by default the one ``build_collection.py
--external`` writes, when it is there), each point also trains one parser on ``size`` GMs drawn the
same way from the whole collection and scores it on every external GM, beside a classical baseline
and a prior learned from the same GMs (``evaluation.external_table``): a second CSV and PNG.

Resumable: each point is an MLflow run (experiment ``gmparse-scaling``, tagged with its key); a
point whose run finished is read back, not retrained, and a point already in the CSV is kept. The
CSV (one row per point, parser and metric: pooled value, spread over folds, paired p against the
classical baseline) and the PNG (log axis; FEN+PN and classical with error bars over folds and
seeds, prior and random as bands) go to ``--out`` and into a summary MLflow run.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

METRICS = ("continuous/l1", "discrete/acc", "discrete/f1", "loss/auc")
PARSERS = ("fen_pn", "classical", "prior", "random")
EXPERIMENT = "gmparse-scaling"
FIELDS = ("key", "collection", "size", "seed", "train_gms", "test_gms", "metric", "parser", "value",
          "fold_std", "p_fen_pn_vs_classical", "p_vs_random", "wall_s")
HERE = Path(__file__).resolve().parent


def point_key(ckey: str, size: int | str, seed: int, cfg, args) -> str:
    """What a point trains, hashed: the same key means the same numbers (up to thread timing)."""
    d = {"collection": ckey, "size": size, "seed": seed, "cfg": cfg.key(),
         "images_per_gm": args.images_per_gm, "baseline_per_gm": args.baseline_per_gm, "shuffles": args.shuffles}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def fold_args_of(seed: int, args) -> argparse.Namespace:
    """What ``diagnose_parsing.run_fold`` reads of its command line, for a point of seed ``seed``."""
    return argparse.Namespace(init_seed=seed, eval_per_gm=args.eval_per_gm, images_per_gm=args.images_per_gm,
                              baseline_per_gm=args.baseline_per_gm)


def run_point(data, col, folds, cfg, size: int | str, seed: int, args) -> dict:
    """Train every fold on ``size`` of its training GMs -> the point's rows (see FIELDS)."""
    import mlflow
    from diagnose_parsing import concat_gm, run_fold

    from gmparse.data_pipeline.folds import Fold, subsample_gms
    from gmparse.models.significance import metrics_of, pooled_table

    t0 = time.time()
    n = 10**9 if size == "all" else int(size)
    fold_args = fold_args_of(seed, args)
    results, sizes = [], []
    for f in folds:
        sub = Fold(f.index, subsample_gms(col.gms, f.train_gms, n, seed=cfg.seed + 1000 * seed + f.index), f.test_gms)
        sizes.append(len(sub.train_gms))
        print(f"[size {size}, seed {seed}] fold {f.index}: {len(sub.train_gms)} training GMs", flush=True)
        results.append(run_fold(data, col, sub, cfg, fold_args, mlflow.active_run().info.run_id, curves=False))
    parts = {k: concat_gm([r["gm"][k] for r in results]) for k in ("last", "classical", "prior")}
    targets = parts["last"][1]
    pooled = pooled_table(parts["last"][0], parts["classical"][0], targets, n_shuffles=args.shuffles,
                          seed=cfg.seed, names=METRICS, prior=parts["prior"][0])
    per_fold = {k: [metrics_of(*r["gm"][k if k != "fen_pn" else "last"]) for r in results]
                for k in ("fen_pn", "classical", "prior")}
    wall = time.time() - t0
    rows = point_rows(pooled, collection_key(col), size, seed, float(np.mean(sizes)), wall,
                      lambda parser, r: (float(np.std([pf[str(r["metric"])] for pf in per_fold[parser]]))
                                         if parser in per_fold else float(r["random_std"])))
    return {"rows": rows, "wall_s": wall, "train_gms": sizes}


def external_point(data, col, ext_col, cfg, size: int | str, seed: int, args, index: int) -> dict:
    """Train one parser on ``size`` GMs of the whole collection and score it on every GM of
    ``ext_col`` -> the point's rows (see FIELDS; ``fold_std`` is 0: one parser, no folds)."""
    import mlflow
    from diagnose_parsing import run_fold

    from gmparse.data_pipeline.folds import Fold, subsample_gms
    from gmparse.models.parser import Parser
    from gmparse.workflows.lib.evaluation import external_table

    t0 = time.time()
    n = 10**9 if size == "all" else int(size)
    every = tuple(col.fake_gms["gm_id"])
    sub = subsample_gms(col.gms, every, n, seed=cfg.seed + 1000 * seed + index)
    print(f"[size {size}, seed {seed}] external: a parser on {len(sub)} of {len(every)} GMs", flush=True)
    fold_args = fold_args_of(seed, args)
    trained = run_fold(data, col, Fold(index, sub, ()), cfg, fold_args, mlflow.active_run().info.run_id, curves=False)
    parser = Parser(trained["model"].eval(), col.ranges)
    table, _ = external_table(parser, col, ext_col, fit_mode=cfg.fit_mode, baseline_images_per_gm=args.baseline_per_gm,
                              seed=cfg.seed, n_shuffles=args.shuffles, train_gms=sub)
    wall = time.time() - t0
    rows = point_rows(table, collection_key(ext_col), size, seed, float(len(sub)), wall,
                      lambda parser, r: float(r["random_std"]) if parser == "random" else 0.0)
    return {"rows": rows, "wall_s": wall}


def point_rows(pooled: list[dict], collection: str, size: int | str, seed: int, train_gms: float, wall: float,
               spread) -> list[dict]:
    """``pooled_table`` rows -> the CSV's rows (FIELDS but the key), one per metric and parser;
    ``spread(parser, pooled_row)`` fills ``fold_std``."""
    rows = []
    for r in pooled:
        for parser in PARSERS:
            p_rnd = {"fen_pn": r["p_fen_pn_vs_random"], "classical": r["p_classical_vs_random"]}.get(parser, "")
            rows.append({"collection": collection, "size": size, "seed": seed, "train_gms": train_gms,
                         "test_gms": int(r["gms"]), "metric": str(r["metric"]), "parser": parser,
                         "value": float(r[parser]), "fold_std": spread(parser, r),
                         "p_fen_pn_vs_classical": float(r["p_fen_pn_vs_classical"]), "p_vs_random": p_rnd,
                         "wall_s": round(wall, 1)})
    return rows


def collection_key(col) -> str:
    """The collection's folder name and its GM table's hash: a rebuild under the same name that kept
    other GMs (another CPU's arithmetic can move the realism gate) is another collection, whose
    points go to another CSV instead of mixing with these."""
    name = col.manifest.get("key") or Path(str(col.path)).name
    digest = str(col.manifest.get("gms_sha256", ""))[:8]
    return f"{name}-{digest}" if digest else name


def finished_runs(experiment_id: str) -> dict[str, str]:
    """Point key -> the id of its FINISHED MLflow run."""
    import mlflow

    runs = mlflow.search_runs([experiment_id], filter_string="tags.bench = 'scaling-point' and "
                              "attributes.status = 'FINISHED'", output_format="list")
    return {r.data.tags["point_key"]: r.info.run_id for r in runs}


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def summarize(rows: list[dict]) -> dict[tuple[str, str], list[tuple[float, float, float]]]:
    """(metric, parser) -> [(mean training GMs, value mean over seeds, error bar)] by size; the
    error bar is the spread over folds (mean over seeds) combined with the spread over seeds."""
    out: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    by: dict[tuple[str, str, float], list[dict]] = {}
    for r in rows:
        by.setdefault((r["metric"], r["parser"], float(r["train_gms"])), []).append(r)
    for (m, p, n), rs in sorted(by.items(), key=lambda kv: kv[0][2]):
        vals = np.array([float(r["value"]) for r in rs])
        spread = float(np.mean([float(r["fold_std"]) for r in rs]))
        err = float(np.sqrt(spread**2 + (vals.std() if len(vals) > 1 else 0.0) ** 2))
        out.setdefault((m, p), []).append((n, float(vals.mean()), err))
    return out


def draw(rows: list[dict], path: Path, title: str, xlabel: str = "training GMs per fold") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = summarize(rows)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6))
    style = {"fen_pn": ("FEN+PN", "C0"), "classical": ("classical spectral", "C1"),
             "prior": ("image-blind prior", "C2"), "random": ("random ground truth", "0.5")}
    for ax, m in zip(axes, METRICS):
        for p in PARSERS:
            pts = curves.get((m, p), [])
            if not pts:
                continue
            n, v, e = (np.array(c) for c in zip(*pts))
            label, color = style[p]
            if p in ("fen_pn", "classical"):
                ax.errorbar(n, v, yerr=e, marker="o", capsize=3, color=color, label=label)
            else:
                ax.fill_between(n, v - e, v + e, color=color, alpha=0.25, label=label)
                ax.plot(n, v, color=color, lw=0.8)
        ax.set_xscale("log")
        ticks = sorted({n for pts in curves.values() for n, _, _ in pts})
        # the sizes themselves, not powers of ten; a size close to the one before it one line lower
        ax.set_xticks(ticks, [("\n" if i and t / ticks[i - 1] < 1.5 else "") + f"{t:.0f}" for i, t in enumerate(ticks)])
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_title(m + (" (lower is better)" if m == "continuous/l1" else ""))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: list[dict]) -> str:
    """Markdown: one line per size, value ± error per parser and metric, paired p FEN+PN vs classical."""
    curves = summarize(rows)
    sizes = sorted({float(r["train_gms"]) for r in rows})
    p_of = {}
    for r in rows:
        if r["parser"] == "fen_pn":
            p_of.setdefault((r["metric"], float(r["train_gms"])), []).append(float(r["p_fen_pn_vs_classical"]))
    head = "| training GMs | " + " | ".join(f"{m}: FEN+PN / classical / prior / random (paired p)" for m in METRICS)
    lines = [head + " |", "|---" * (len(METRICS) + 1) + "|"]
    for n in sizes:
        cells = []
        for m in METRICS:
            vals = {p: next((v, e) for x, v, e in curves[(m, p)] if x == n) for p in PARSERS if (m, p) in curves}
            ps = p_of.get((m, n), [float("nan")])
            cells.append(" / ".join(f"{vals[p][0]:.3f}±{vals[p][1]:.3f}" if p in ("fen_pn", "classical")
                                    else f"{vals[p][0]:.3f}" for p in PARSERS)
                         + " (" + ", ".join(f"{p:.3g}" for p in ps) + ")")
        lines.append(f"| {n:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import mlflow
    import torch

    from gmparse.data_pipeline.build_config import build_config
    from gmparse.data_pipeline.collection import open_collection
    from gmparse.data_pipeline.folds import gm_folds
    from gmparse.data_pipeline.in_memory import load_images
    from gmparse.workflows.lib.job_config import job_config
    from gmparse.workflows.lib.runtime import init_mlflow

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", help="collection path (default: the wide preset's build)")
    ap.add_argument("--collection-preset", default="wide")
    ap.add_argument("--sizes", default="12,24,48,96,192,all", help="training GMs per fold ('all': every one)")
    ap.add_argument("--seeds", type=int, default=2, help="seeds at sizes <= --small")
    ap.add_argument("--small", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=None, help="epochs (default: the default job's, 12)")
    ap.add_argument("--images-per-gm", type=int, default=64, help="images of each training GM per epoch")
    ap.add_argument("--baseline-per-gm", type=int, default=96)
    ap.add_argument("--eval-per-gm", type=int, default=48)
    ap.add_argument("--shuffles", type=int, default=2000)
    ap.add_argument("--folds", type=int, default=None, help="GM-disjoint folds (default: the default job's, 4)")
    ap.add_argument("--job-preset", default="default", help="the job whose model and step are trained")
    ap.add_argument("--out", default=str(HERE / "scaling"), help="folder of the CSV and the PNG")
    ap.add_argument("--figure-dir", default=str(HERE / "figures"),
                    help="also copy each curve's PNG here as scaling_folds.png / scaling_external.png ('' : no)")
    ap.add_argument("--external", default="auto",
                    help="external collection to score a parser of each size on (auto: build_collection.py "
                         "--external's, when built; none: skip)")
    ap.add_argument("--curves", default="folds,external",
                    help="which curves to run: folds (the held-out folds), external (the transfer curve), or both; "
                         "e.g. external alone on a rebuild of the collection whose fold curve is already measured")
    ap.add_argument("--results", choices=("auto", "yes", "no"), default="auto",
                    help="write the wall times and a cluster projection into benchmarks/RESULTS.md "
                         "(auto: when --out is the committed folder)")
    args = ap.parse_args(argv)
    kinds = [k for k in args.curves.split(",") if k]
    if not kinds or set(kinds) - {"folds", "external"}:
        ap.error(f"--curves takes folds, external or folds,external, got {args.curves!r}")
    cfg = job_config(args.job_preset)
    cfg = replace(cfg, epochs=args.epochs or cfg.epochs, folds=args.folds or cfg.folds, checkpoint="last")
    torch.set_num_threads(max(cfg.threads, 1))
    path = args.collection or build_config(args.collection_preset, seed=cfg.seed).default_path()
    col = open_collection(path)
    ckey = collection_key(col)
    folds = gm_folds(col.gms, cfg.folds, cfg.seed)
    most = min(len(f.train_gms) for f in folds)
    sizes: list[int | str] = []
    for s in args.sizes.split(","):
        if s != "all" and int(s) >= most:
            print(f"size {s} >= the smallest fold's {most} training GMs: it is 'all'", flush=True)
        sizes.append("all" if s == "all" or int(s) >= most else int(s))
    sizes = list(dict.fromkeys(sizes))
    smallest = min(most if s == "all" else int(s) for s in sizes)
    if smallest * args.images_per_gm < cfg.batch_size:  # an epoch of no full batch would train nothing
        ap.error(f"{smallest} GMs x --images-per-gm {args.images_per_gm} images is less than one batch "
                 f"({cfg.batch_size}): raise --images-per-gm or the smallest size")
    points = [(s, seed) for s in sizes
              for seed in range(args.seeds if s != "all" and int(s) <= args.small else 1)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ext_col = external_collection(args.external) if "external" in kinds else None
    if kinds == ["external"] and ext_col is None:
        ap.error("--curves external needs the external collection (--external PATH, or build_collection.py --external)")
    curves = {}
    if "folds" in kinds:
        curves["folds"] = Curve(out / f"scaling_{ckey}.csv", f"{ckey}: {cfg.folds} folds, unseen GMs pooled; "
                                                             f"{cfg.epochs} epochs x {args.images_per_gm} images per GM")
    if ext_col is not None:
        ekey = collection_key(ext_col)
        curves["external"] = Curve(out / f"scaling_{ckey}_on_{ekey}.csv",
                                   f"trained on {ckey}, scored on {ekey} ({len(ext_col.fake_gms)} GMs written elsewhere)",
                                   xlabel="training GMs (one parser, the whole collection)")
    init_mlflow(EXPERIMENT)
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    done = finished_runs(exp.experiment_id)
    t_start, data = time.time(), None
    for size, seed in points:
        for kind, curve in curves.items():
            key = point_key(ckey if kind == "folds" else f"{ckey}|on|{ekey}", size, seed, cfg, args)
            name = f"[size {size}, seed {seed}]" + ("" if kind == "folds" else " external")
            if any(r["key"] == key for r in curve.rows):
                print(f"{name} in {curve.csv.name} already ({key})", flush=True)
                continue
            if key in done:
                got = json.loads(Path(mlflow.artifacts.download_artifacts(
                    run_id=done[key], artifact_path="rows.json", dst_path=str(out / ".mlflow"))).read_text())
                print(f"{name} read back from MLflow run {done[key]}", flush=True)
            else:
                if data is None:
                    t0 = time.time()
                    data = load_images(col, list(col.fake_gms["gm_id"]), cfg.image_size)
                    print(f"{len(data.images)} images of {len(col.fake_gms)} GMs decoded in {time.time() - t0:.0f} s",
                          flush=True)
                run_name = f"size-{size}-seed-{seed}" + ("" if kind == "folds" else "-external")
                with mlflow.start_run(run_name=run_name, tags={"bench": "scaling-point", "point_key": key,
                                                               "curve": kind}) as run:
                    mlflow.log_params({"size": size, "seed": seed, "collection": ckey, "folds": cfg.folds,
                                       "epochs": cfg.epochs, "images_per_gm": args.images_per_gm,
                                       "budget": "same image-steps per GM", "job_key": cfg.key(), "curve": kind})
                    res = (run_point(data, col, folds, cfg, size, seed, args) if kind == "folds" else
                           external_point(data, col, ext_col, cfg, size, seed, args, index=len(folds)))
                    got = [{**r, "key": key} for r in res["rows"]]
                    for r in got:
                        if r["metric"] in METRICS:
                            mlflow.log_metric(f"{r['parser']}.{r['metric'].replace('/', '.')}", r["value"])
                    mlflow.log_metric("wall_s", res["wall_s"])
                    mlflow.log_dict(got, "rows.json")
                    print(f"{name} {res['wall_s']:.0f} s, run {run.info.run_id}", flush=True)
            curve.add(key, got)
    with mlflow.start_run(run_name="curve", tags={"bench": "scaling-curve", "collection": ckey}):
        mlflow.log_params({"sizes": args.sizes, "seeds": args.seeds, "cfg": json.dumps(asdict(cfg), default=str)[:5000]})
        for kind, curve in curves.items():
            if not curve.rows:
                continue
            print(f"\n{curve.title}\n{table(curve.rows)}\n{curve.csv}\n{curve.png}", flush=True)
            mlflow.log_artifact(str(curve.csv))
            mlflow.log_artifact(str(curve.png))
            if args.figure_dir:  # under a name without the collection's hash, for the README
                shutil.copyfile(curve.png, Path(args.figure_dir) / f"scaling_{kind}.png")
            mlflow.log_text(table(curve.rows), f"table_{kind}.md")
        mlflow.log_metric("wall_s_this_call", time.time() - t_start)
    print(f"{time.time() - t_start:.0f} s this call", flush=True)
    if args.results == "yes" or (args.results == "auto" and Path(args.out).resolve() == (HERE / "scaling").resolve()):
        import common

        for kind, curve in curves.items():
            section = results_section(kind, curve, cfg.folds, f"{cfg.epochs} epochs x {args.images_per_gm} images per GM")
            section.seconds = sum(r[-1] for r in section.rows if r[0] != "total")
            section.print()
            common.update_results(section)
    return 0


#: cluster shapes the projection is written for: (``--num-workers`` per fold, ``--concurrent-folds``)
CLUSTER = ((1, 1), (1, 4), (4, 4), (8, 4))


def results_section(kind: str, curve: Curve, folds: int, budget: str):
    """RESULTS.md's section of one curve: each point's measured wall seconds here, and, for the fold
    curve, what it would take on a cluster, projected from a fit ``wall = a + b * training GMs``."""
    import common

    seen: dict[str, dict] = {}
    for r in curve.rows:
        seen.setdefault(r["key"], r)
    rows = [[kind, str(r["size"]), int(r["seed"]), float(r["train_gms"]), float(r["wall_s"])]
            for r in sorted(seen.values(), key=lambda r: (float(r["train_gms"]), int(r["seed"])))]
    fit_x, fit_y = [r[3] for r in rows], [r[4] for r in rows]
    rows.append(["total", kind, "", "", sum(fit_y)])
    notes = []
    if kind == "folds" and len(set(fit_x)) >= 2:
        b, a = np.polyfit(fit_x, fit_y, 1)  # a: evaluation and baselines of all folds; b: training per GM
        worst = max(abs(y - (a + b * x)) for x, y in zip(fit_x, fit_y))
        proj = []
        for workers, concurrent in CLUSTER:
            waves = -(-folds // concurrent)
            t = sum(waves * (a / folds + b * x / folds / workers) for x in fit_x)
            proj.append(f"--num-workers {workers} --concurrent-folds {concurrent}: {t / 60:.0f} min")
        notes += [
            f"Fit over the {len(fit_x)} fold points: wall = {a:.0f} s + {b:.2f} s per training GM per fold "
            f"(all {folds} folds; {a:.0f} s is scoring every unseen GM's images, the classical baseline and the "
            f"prior, which do not grow with the training GMs); its largest miss on a point is "
            f"{worst:.0f} s. The whole fold curve ({len(set(fit_x))} sizes) took {sum(fit_y) / 60:.0f} min here.",
            "Cluster projection of the fold curve (arithmetic from that fit, not a measurement: a fold's "
            "training divided by its workers as if data-parallel were ideal, its scoring not; folds run "
            "--concurrent-folds at a time, one node each; start-up and the 14 s decode ignored): " + "; ".join(proj) + ".",
            "bench_scaling.py trains each fold in one process, one after the other (diagnose_parsing.run_fold); "
            "the two flags are the main job's (workflows/cv_folds.py). Ray Train's 2 workers on this 2-core "
            "machine gave 1.55x one worker's images/s (section 2), so the 4- and 8-worker rows are lower bounds on the time.",
        ]
    if kind == "folds":
        name, title, per = "scaling", "Scaling curve (benchmarks/bench_scaling.py, wall seconds per point, CPU)", " per fold"
        how = (f"Each point trains FEN+PN on `size` training GMs of every fold ({budget}), "
               "then scores every image of the fold's unseen GMs beside the classical baseline and the prior; "
               "its wall seconds are measured in the call that trained it (a resumed curve's points come from "
               "several calls) and kept in the curve's CSV. Numbers of the curve itself: README and docs/results.md.")
    else:
        name, per = "scaling_external", ""
        title = "Transfer curve (benchmarks/bench_scaling.py --curves external, wall seconds per point, CPU)"
        how = (f"Each point trains one FEN+PN on `size` GMs drawn from the whole collection ({budget}), then "
               "scores every GM of the external collection beside a classical baseline and a prior learned from "
               "the same GMs; wall seconds as measured in the call that trained it, kept in the curve's CSV. "
               "Numbers of the curve itself: README and docs/results.md.")
    return common.Section(name=name, title=title, how=how, columns=["curve", "size", "seed", f"training GMs{per}", "wall s"],
                          rows=rows, notes=notes)


class Curve:
    """One curve's rows, kept in its CSV (rewritten, and its PNG redrawn, after every point)."""

    def __init__(self, csv_path: Path, title: str, xlabel: str = "training GMs per fold") -> None:
        self.csv, self.png, self.title, self.xlabel = csv_path, csv_path.with_suffix(".png"), title, xlabel
        self.rows = read_csv(csv_path)

    def add(self, key: str, rows: list[dict]) -> None:
        self.rows = [r for r in self.rows if r["key"] != key] + [{**r, "key": key} for r in rows]
        write_csv(self.csv, self.rows)
        draw(self.rows, self.png, self.title, self.xlabel)


def external_collection(spec: str):
    """``--external``: a path, ``none``, or ``auto`` (build_collection.py --external's folder, when built)."""
    from gmparse.data_pipeline.collection import open_collection

    if spec == "none":
        return None
    if spec == "auto":
        from gmparse.data_pipeline.external_gms import default_external_path

        path = default_external_path()
        if not (path / "manifest.json").exists():
            print(f"no external collection at {path}: the transfer curve is skipped "
                  "(python workflows/build_collection.py --external builds it)", flush=True)
            return None
        spec = str(path)
    return open_collection(spec)


if __name__ == "__main__":
    sys.exit(main())
