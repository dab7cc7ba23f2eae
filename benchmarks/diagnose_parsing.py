"""Why does FEN+PN (not) parse unseen GMs? One config, every fold, curves and the pooled table.

    python benchmarks/diagnose_parsing.py --tag paper-4ep                      # the main job's default config
    python benchmarks/diagnose_parsing.py --tag spec --pn-input both --epochs 12 --val-gms 0.2

In-process and in memory (no Ray: a variant on the default collection takes minutes, not the
main job's 40), with the main job's model, loss and epoch step (``models.engine``) and its
``JobConfig`` options. Per epoch and for the same model it scores, at GM level:
``seen`` held-out images of the training GMs, ``valgm`` training GMs held out whole
(``--val-gms``, what picks the epoch when > 0) and ``unseen`` the fold's test GMs (never used
to pick anything). Curves go to MLflow (experiment ``gmparse-diagnosis``, one run per
variant, nested per fold); the pooled table over all GMs puts the selected epoch's FEN+PN
beside the classical baseline and random ground truth.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gmparse.data_pipeline.build_config import build_config
from gmparse.data_pipeline.collection import Collection, open_collection
from gmparse.data_pipeline.folds import gm_folds, holdout_gms, inner_fold, validation_mask
from gmparse.data_pipeline.in_memory import ImageArrays, load_images, sample_per_gm
from gmparse.data_pipeline.schema import TargetArrays
from gmparse.models import metrics
from gmparse.models.engine import autocast_dtype, predict_batches, train_one_epoch, weight_ema
from gmparse.models.parser import ParsingModel
from gmparse.models.pn import class_weights
from gmparse.models.predictions import Predictions
from gmparse.models.significance import format_pooled, metrics_of, pooled_table
from gmparse.models.spectral_baseline import SpectralBaseline
from gmparse.workflows.lib.cli import add_dataclass_args, resolve
from gmparse.workflows.lib.job_config import JobConfig, job_config

CURVE_KEYS = ("score", "continuous/l1", "discrete/acc", "discrete/f1", "loss/auc", "discrete/acc/upsampling")


def per_gm_subset(data: ImageArrays, idx: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``k`` random images of each GM among ``idx`` (GM-balanced; all when ``k`` <= 0), shuffled."""
    return rng.permutation(idx[sample_per_gm(data.gm_ids[idx], k, rng)])


def channels_last(batches):
    """Batches in the training loop's memory layout (models.inputs.model_input keeps uint8 batches
    channels-last; these are float already, which it passes through)."""
    for b in batches:
        yield {**b, "image": b["image"].contiguous(memory_format=torch.channels_last)}


def gm_level(data: ImageArrays, pred: Predictions, idx: np.ndarray) -> tuple[Predictions, TargetArrays]:
    """Per-image predictions of rows ``idx`` -> (one averaged row per GM, that GM's targets)."""
    _, gp, gt = metrics.gm_level(pred, data.targets.take(idx), data.gm_ids[idx])
    return gp, gt


def run_fold(data: ImageArrays, col: Collection, fold, cfg: JobConfig, args, parent_id: str | None,
             curves: bool = True) -> dict:
    """Train and score one fold. ``curves=False`` (the scaling curve) scores nothing per epoch and
    keeps the last epoch's model: no epoch is picked, and the per-epoch evaluation, which costs
    more than training at a few GMs, is skipped. A fold with no test GMs (a parser for another
    collection) is only trained: the result holds the kept ``model`` and no ``gm`` tables."""
    import mlflow

    # --init-seed changes the network's initialization and image sampling, not the folds (cfg.seed)
    rng = np.random.default_rng(cfg.seed + fold.index if not args.init_seed else [cfg.seed + fold.index, args.init_seed])
    torch.manual_seed(cfg.seed * 1000 + fold.index + 7919 * args.init_seed)
    fit_gms, val_gms = holdout_gms(col.gms, fold.train_gms, cfg.val_gms, cfg.seed + fold.index)
    held = validation_mask(data.image_ids, cfg.val_fraction, cfg.seed)
    fit_rows = np.isin(data.gm_ids, fit_gms)
    train_idx = np.flatnonzero(fit_rows & ~held)
    seen_idx = per_gm_subset(data, np.flatnonzero(fit_rows & held), args.eval_per_gm, rng)
    valgm_idx = per_gm_subset(data, data.of_gms(val_gms), args.eval_per_gm, rng) if val_gms else None
    test_all = data.of_gms(fold.test_gms)
    test_idx = per_gm_subset(data, test_all, args.eval_per_gm, rng) if len(test_all) else test_all

    model = ParsingModel(cfg.model).to(memory_format=torch.channels_last)  # as the training loop does
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    cw = class_weights(data.take(data.of_gms(fit_gms)).targets)
    ema = weight_ema(model, cfg.ema)
    kept = ema.module if ema is not None else model  # the model scored and kept (the main job's rule)
    best, best_state, history = -np.inf, None, []
    with mlflow.start_run(run_name=f"fold-{fold.index}", nested=True, parent_run_id=parent_id):
        mlflow.log_params({"fit_gms": len(fit_gms), "val_gms": len(val_gms), "test_gms": len(fold.test_gms)})
        for epoch in range(cfg.epochs):
            batches = data.batches(per_gm_subset(data, train_idx, args.images_per_gm, rng), cfg.batch_size,
                                   drop_last=True)
            tr = train_one_epoch(model, opt, channels_last(batches), cfg.weights, cw,
                                 ema=ema, amp_dtype=autocast_dtype(cfg.precision, "cpu"), hflip=cfg.hflip,
                                 label_smoothing=cfg.label_smoothing)
            row = {"epoch": epoch, "train/parsing": tr["parsing"], "train/images_per_s": tr["images_per_s"]}
            for name, idx in (("seen", seen_idx), ("valgm", valgm_idx), ("unseen", test_idx)):
                if idx is None or not curves:
                    continue
                pred, _ = predict_batches(kept, data.batches(idx, 256))
                m = metrics_of(*gm_level(data, pred, idx))
                row.update({f"{name}/{k}": m[k] for k in CURVE_KEYS})
            history.append(row)
            mlflow.log_metrics({k.replace("/", "."): v for k, v in row.items() if np.isfinite(v)}, step=epoch)
            pick = (row["valgm/score"] if val_gms else row["seen/score"]) if curves else epoch  # else: the last
            if pick > best:
                best, best_epoch = pick, epoch
                best_state = {k: v.clone() for k, v in kept.state_dict().items()} if curves else None
            print(f"  fold {fold.index} epoch {epoch}: " + " ".join(
                f"{k}={row[k]:.3f}" for k in ("train/parsing", "seen/score", "valgm/score", "unseen/score",
                                               "unseen/discrete/acc/upsampling") if k in row)
                + f" ({tr['images_per_s']:.0f} img/s)", flush=True)
        if not len(fold.test_gms):
            return {"model": kept, "history": history, "best_epoch": best_epoch}
        last_pred, _ = predict_batches(kept, data.batches(test_all, 256))
        if curves:
            kept.load_state_dict(best_state)
            sel_pred, _ = predict_batches(kept, data.batches(test_all, 256))
        else:
            sel_pred = last_pred
        mlflow.log_metric("best_epoch", best_epoch)
    t0 = time.time()
    # the classical baseline learns from the GMs FEN+PN trains on (with --val-gms > 0, not the held-out ones)
    base_idx = per_gm_subset(data, np.flatnonzero(fit_rows & ~held),
                             args.baseline_per_gm, rng)
    baseline = SpectralBaseline(seed=cfg.seed).fit(data.images[base_idx], data.take(base_idx).targets)
    base_pred = baseline.predict(data.images[test_all])
    print(f"  fold {fold.index}: best epoch {best_epoch}; classical baseline {time.time() - t0:.1f} s", flush=True)
    gm = {k: gm_level(data, p, test_all) for k, p in (("selected", sel_pred), ("last", last_pred),
                                                        ("classical", base_pred))}
    gm["prior"] = (Predictions.prior(col.targets(list(fit_gms)), len(gm["last"][1].continuous)), gm["last"][1])
    return {"gm": gm, "history": history, "best_epoch": best_epoch}


def concat_gm(parts: list[tuple[Predictions, TargetArrays]]) -> tuple[Predictions, TargetArrays]:
    return Predictions.concat([p for p, _ in parts]), TargetArrays.concat([t for _, t in parts])


def main(argv: list[str] | None = None) -> int:
    import mlflow

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default")
    p.add_argument("--collection", help="collection path (default: the preset's built zoo)")
    p.add_argument("--tag", required=True, help="name of this variant (the MLflow run name)")
    p.add_argument("--only-folds", default="", help="comma-separated fold indices (default: all)")
    p.add_argument("--inner-holdout", type=float, default=0.0,
                   help="score on this share of each fold's training GMs, held out whole, instead of its test "
                        "GMs (which are then never read): for choosing settings without touching a test GM")
    p.add_argument("--images-per-gm", type=int, default=0, help="GM-balanced: images per GM per epoch (0: all)")
    p.add_argument("--eval-per-gm", type=int, default=48, help="images per GM in the per-epoch curves")
    p.add_argument("--baseline-per-gm", type=int, default=96, help="training images per GM for the classical baseline")
    p.add_argument("--shuffles", type=int, default=2000)
    p.add_argument("--init-seed", type=int, default=0, help="initialization / sampling seed (the folds stay cfg.seed's)")
    p.add_argument("--save", help="pickle the pooled GM-level predictions (selected, last, classical) and targets here")
    add_dataclass_args(p, JobConfig, "job (overrides the preset)", skip=("preset",))
    args = p.parse_args(argv)
    cfg = resolve(job_config(args.preset), args)
    torch.set_num_threads(max(cfg.threads, 1))
    col = open_collection(args.collection) if args.collection else open_collection(
        build_config(cfg.collection_preset, seed=cfg.seed).default_path())
    folds = gm_folds(col.gms, cfg.folds, cfg.seed)
    if args.only_folds:
        folds = [folds[int(i)] for i in args.only_folds.split(",")]
    if args.inner_holdout > 0:
        folds = [inner_fold(col.gms, f, args.inner_holdout, cfg.seed) for f in folds]
    t0 = time.time()
    data = load_images(col, sorted({g for f in folds for g in (*f.train_gms, *f.test_gms)}), cfg.image_size)
    print(f"{len(data.images)} images decoded in {time.time() - t0:.1f} s", flush=True)
    mlflow.set_tracking_uri(mlflow.get_tracking_uri() if "MLFLOW_TRACKING_URI" in __import__("os").environ
                            else f"sqlite:///{Path(__file__).resolve().parents[1] / 'mlflow.db'}")
    mlflow.set_experiment("gmparse-diagnosis")
    with mlflow.start_run(run_name=args.tag) as run:
        mlflow.log_params({k: v for k, v in vars(args).items() if v is not None})
        mlflow.log_params({"cfg." + k: v for k, v in __import__("dataclasses").asdict(cfg).items()})
        results = [run_fold(data, col, f, cfg, args, run.info.run_id) for f in folds]
        tables = {}
        for which in ("selected", "last"):
            pred, t = concat_gm([r["gm"][which] for r in results])
            cpred, _ = concat_gm([r["gm"]["classical"] for r in results])
            prior, _ = concat_gm([r["gm"]["prior"] for r in results])
            rows = pooled_table(pred, cpred, t, n_shuffles=args.shuffles, seed=cfg.seed, prior=prior)
            tables[which] = rows
            mlflow.log_dict(rows, f"tables/pooled_{which}.json")
            mlflow.log_text(format_pooled(rows), f"tables/pooled_{which}.txt")
            for r in rows:
                mlflow.log_metric(f"pooled.{which}.{r['metric'].replace('/', '.')}", r["fen_pn"])
                mlflow.log_metric(f"pooled.classical.{r['metric'].replace('/', '.')}", r["classical"])
        mlflow.log_dict([r["history"] for r in results], "history.json")
        if args.save:
            import pickle

            with open(args.save, "wb") as f:
                pickle.dump({k: concat_gm([r["gm"][k] for r in results]) for k in ("selected", "last", "classical")}, f)
        scored = "training GMs held out whole (--inner-holdout)" if args.inner_holdout > 0 else "unseen GMs"
        print(f"\n[{args.tag}] pooled over {len(t.continuous)} {scored}, epoch picked on "
              f"{'held-out GMs' if cfg.val_gms else 'held-out images'}; best epochs {[r['best_epoch'] for r in results]}")
        print(format_pooled(tables["selected"]))
        print(f"\n[{args.tag}] last epoch:")
        print(format_pooled(tables["last"][:7]))
        print(f"MLflow run {run.info.run_id}; {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
