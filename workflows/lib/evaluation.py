"""The main job's evaluation beyond one fold: the classical baseline per fold and the pooled
GM-level table over all folds (FEN+PN, classical baseline, random ground truth, p-values).

Each fake GM is a test GM in exactly one fold, so the folds' GM-level predictions pool into
one table over every GM; that table is the job's headline, the per-fold rows its spread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from gmparse.data_pipeline.schema import TargetArrays
from gmparse.models.predictions import Predictions


def classical_baseline(col, train_gms: Sequence[str], test_gms: Sequence[str], size: int, per_gm: int,
                       val_fraction: float, seed: int) -> tuple[np.ndarray, Predictions, float]:
    """Fit the spectral baseline on the training GMs' training images (the network's held-out
    images stay out), predict every image of the test GMs -> (GM ids, GM-level predictions, seconds)."""
    from gmparse.data_pipeline.folds import validation_mask
    from gmparse.data_pipeline.in_memory import load_images
    from gmparse.models.spectral_baseline import SpectralBaseline

    t0 = time.time()
    train = load_images(col, train_gms, size, per_gm=per_gm, seed=seed)
    train = train.take(np.flatnonzero(~validation_mask(train.image_ids, val_fraction, seed)))
    test = load_images(col, test_gms, size)
    pred = SpectralBaseline(seed=seed).fit(train.images, train.targets).predict(test.images)
    ids, gp = pred.aggregate(test.gm_ids)
    return ids, gp, time.time() - t0


def pool(folds: list[dict[str, Any]]) -> tuple[Predictions, Predictions, Predictions, TargetArrays, np.ndarray]:
    """Concatenate the folds' GM-level predictions (FEN+PN, classical, each fold's image-blind
    prior), targets and GM ids."""
    for f in folds:
        if list(f["gm_ids"]) != list(f["classical_gm_ids"]):
            raise RuntimeError(f"{f['label']}: FEN+PN and the classical baseline saw different GMs")
    return (Predictions.concat([f["gm_pred"] for f in folds]), Predictions.concat([f["classical_pred"] for f in folds]),
            Predictions.concat([f["prior_pred"] for f in folds]),
            TargetArrays.concat([f["gm_targets"] for f in folds]), np.concatenate([f["gm_ids"] for f in folds]))


def log_pooled(rows: list[dict[str, Any]], text: str) -> None:
    """The pooled table to the active MLflow run: metrics ``pooled.<column>.<metric>`` and tables/."""
    import mlflow

    for r in rows:
        m = str(r["metric"]).replace("/", ".")
        mlflow.log_metrics({f"pooled.fen_pn.{m}": r["fen_pn"], f"pooled.classical.{m}": r["classical"],
                            f"pooled.random.{m}": r["random"], f"pooled.p_fen_pn_vs_random.{m}": r["p_fen_pn_vs_random"],
                            f"pooled.p_fen_pn_vs_classical.{m}": r["p_fen_pn_vs_classical"],
                            **({f"pooled.prior.{m}": r["prior"]} if np.isfinite(r["prior"]) else {})})
    mlflow.log_dict(rows, "tables/pooled.json")
    mlflow.log_text(text, "tables/pooled.txt")


def gm_predictions(parser, test, fit_mode: str) -> tuple[np.ndarray, Predictions, np.ndarray, np.ndarray]:
    """``parser`` on the decoded images ``test`` (any size, fitted to its own through
    ``preprocess.fit_to_size(fit_mode)``; views of one GM averaged) -> (GM ids, GM-level
    predictions, the views, each view's GM id)."""
    from gmparse.data_pipeline.preprocess import fit_views

    views, owner = fit_views(test.images, parser.config.image_size, fit_mode)
    view_gms = test.gm_ids[owner]
    ids, pred = parser.predict_arrays(views).aggregate(view_gms)
    return ids, pred, views, view_gms


def external_table(parser, train_col, test_col, *, fit_mode: str, baseline_images_per_gm: int, seed: int,
                   n_shuffles: int, train_gms: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], str]:
    """Train once, test anywhere: the trained parser and a classical baseline trained on every GM
    of ``train_col`` (or on ``train_gms``, those the parser trained on) score every GM of
    ``test_col``, pooled, beside random ground truth and the training GMs' image-blind prior.

    Images of another resolution reach the model through ``preprocess.fit_to_size(fit_mode)``
    (views of one GM are averaged); continuous labels are put on the training collection's
    scale (raw values normalized with its ranges, clipped), as the parser predicts on it.
    """
    from gmparse.data_pipeline.in_memory import load_images
    from gmparse.models.significance import format_pooled, pooled_table
    from gmparse.models.spectral_baseline import SpectralBaseline

    test = load_images(test_col, list(test_col.fake_gms["gm_id"]), test_col.image_size)
    ids, fen, views, view_gms = gm_predictions(parser, test, fit_mode)
    trained_on = list(train_gms) if train_gms is not None else list(train_col.fake_gms["gm_id"])
    train = load_images(train_col, trained_on, parser.config.image_size, per_gm=baseline_images_per_gm, seed=seed)
    _, classical = SpectralBaseline(seed=seed).fit(train.images, train.targets).predict(views).aggregate(view_gms)
    t = test_col.targets(ids)
    cont = train_col.ranges.normalize(test_col.ranges.denormalize(np.asarray(t.continuous)))
    targets = TargetArrays(cont, np.asarray(t.discrete), np.asarray(t.loss), np.asarray(t.group))
    prior = Predictions.prior(train_col.targets(trained_on), len(ids))
    rows = pooled_table(fen, classical, targets, n_shuffles=n_shuffles, seed=seed, prior=prior)
    return rows, format_pooled(rows)


def head_to_head(challenger, champion, test_col, *, fit_mode: str, seed: int, n_shuffles: int
                 ) -> tuple[list[dict[str, Any]], str, bool]:
    """Two saved parsers on every GM of ``test_col``: (rows, text, the challenger wins).

    Each parser's continuous answers go back to raw values through its own training ranges and onto
    ``test_col``'s scale, so parsers trained on collections of other ranges compare on one L1. The
    rows are :func:`pooled_table`'s with the challenger in the FEN+PN column and the champion in the
    classical one (``p paired``: challenger vs champion, GMs swapped at random). The challenger wins
    on a higher parsing score (``score``: (1 - L1 + discrete F1 + loss F1) / 3, what picks epochs)."""
    from dataclasses import replace

    from gmparse.data_pipeline.in_memory import load_images
    from gmparse.models.significance import pooled_table

    test = load_images(test_col, list(test_col.fake_gms["gm_id"]), test_col.image_size)
    preds, ids = [], None
    for parser in (challenger, champion):
        gm_ids, pred, _, _ = gm_predictions(parser, test, fit_mode)
        if ids is not None and list(gm_ids) != list(ids):
            raise RuntimeError("the two parsers were scored on different GMs")
        ids = gm_ids
        preds.append(replace(pred, continuous=test_col.ranges.normalize(parser.ranges.denormalize(pred.continuous))))
    rows = pooled_table(preds[0], preds[1], test_col.targets(ids), n_shuffles=n_shuffles, seed=seed)
    score = next(r for r in rows if r["metric"] == "score")
    lines = [f"{'metric (GM level)':36} {'challenger':>10} {'champion':>10} {'random':>8} {'p paired':>8}"]
    lines += [f"{r['metric']:36} {r['fen_pn']:10.3f} {r['classical']:10.3f} {r['random']:8.3f} "
              f"{r['p_fen_pn_vs_classical']:8.3f}" for r in rows]
    return rows, "\n".join(lines), bool(score["fen_pn"] > score["classical"])
