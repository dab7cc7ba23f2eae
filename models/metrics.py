"""Evaluation: parsing metrics at image and GM level, the random-ground-truth baseline with a
permutation p-value, detection AUC and attribution accuracy (scikit-learn where it fits).

Metric names are flat strings ``<group>/<metric>[/<label>]`` so tables, MLflow and Ray
Tune all use the same keys. Only ``continuous/l1*`` are lower-is-better.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score

from gmparse.data_pipeline.schema import (
    CONTINUOUS,
    DISCRETE_NAMES,
    GROUP_NAMES,
    LOSS_GROUP_INDEX,
    LOSS_TYPES,
    Ranges,
    TargetArrays,
)

from .predictions import Predictions

LEVELS = ("image", "gm")


def lower_is_better(name: str) -> bool:
    return name.startswith("continuous/l1")


# Fast numpy versions of scikit-learn's binary F1, macro F1 and ROC AUC, row-wise so the pooled
# significance tests (models.significance) score thousands of label sets at once; sklearn's input
# validation costs ~10 ms a call. tests/test_metrics.py checks they agree with sklearn.
def auc_rows(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Row-wise ROC AUC of [S, m] labels and scores (Mann-Whitney U with average ranks for ties;
    NaN where a row has one class)."""
    y = np.asarray(y).astype(bool)
    ranks = rankdata(np.asarray(score, dtype=np.float64), axis=1)
    n_pos = y.sum(axis=1).astype(np.float64)
    n_neg = y.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * y).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def f1_rows(y: np.ndarray, hat: np.ndarray) -> np.ndarray:
    """Row-wise binary F1 over all trailing axes (0 where undefined, as zero_division=0)."""
    y, hat = np.asarray(y).astype(bool), np.asarray(hat).astype(bool)
    axes = tuple(range(1, y.ndim))
    tp = (y & hat).sum(axis=axes)
    denom = y.sum(axis=axes) + hat.sum(axis=axes)
    return np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of one label/score set (see :func:`auc_rows`)."""
    return float(auc_rows(np.asarray(y).reshape(1, -1), np.asarray(score).reshape(1, -1))[0])


def _f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Binary F1 of the positive class (0 when undefined, like zero_division=0)."""
    return float(f1_rows(np.asarray(y).reshape(1, -1), np.asarray(pred).reshape(1, -1))[0])


def _macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Macro F1 over the classes present in y or pred (sklearn's default label set)."""
    y, pred = np.asarray(y).ravel(), np.asarray(pred).ravel()
    labels = np.union1d(y, pred)
    return float(np.mean([_f1(y == c, pred == c) for c in labels]))


def _mean(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def parsing_score(metrics: dict[str, float]) -> float:
    """The one scalar Ray Tune maximizes (higher is better, in [0, 1]):

    mean of (1 - mean normalized continuous L1), mean discrete macro-F1, and overall
    loss-type F1 — one third each for the three kinds of hyperparameter.
    """
    return _mean([1.0 - metrics["continuous/l1"], metrics["discrete/f1"], metrics["loss/f1"]])


def parsing_metrics(
    pred: Predictions, targets: TargetArrays, ranges: Ranges | None = None, threshold: float = 0.5
) -> dict[str, float]:
    """All parsing metrics of aligned rows (images or GMs), plus ``score`` (see parsing_score)."""
    m: dict[str, float] = {}
    cont_t = np.asarray(targets.continuous, dtype=np.float64)
    err = np.abs(pred.continuous - cont_t)
    m["continuous/l1"] = float(err.mean())
    for j, k in enumerate(CONTINUOUS):
        m[f"continuous/l1/{k}"] = float(err[:, j].mean())
    if ranges is not None:
        raw_err = np.abs(ranges.denormalize(pred.continuous) - ranges.denormalize(cont_t))
        for j, k in enumerate(CONTINUOUS):
            m[f"continuous/l1_raw/{k}"] = float(raw_err[:, j].mean())
    disc_t, disc_p = np.asarray(targets.discrete), pred.discrete
    for j, k in enumerate(DISCRETE_NAMES):
        m[f"discrete/acc/{k}"] = float(np.mean(disc_t[:, j] == disc_p[:, j]))
        m[f"discrete/f1/{k}"] = _macro_f1(disc_t[:, j], disc_p[:, j])
    m["discrete/acc"] = _mean([m[f"discrete/acc/{k}"] for k in DISCRETE_NAMES])
    m["discrete/f1"] = _mean([m[f"discrete/f1/{k}"] for k in DISCRETE_NAMES])
    loss_t, loss_p = np.asarray(targets.loss), pred.loss_prob
    loss_hat = (loss_p >= threshold).astype(np.int64)
    for j, t in enumerate(LOSS_TYPES):
        m[f"loss/f1/{t}"] = _f1(loss_t[:, j], loss_hat[:, j])
        m[f"loss/auc/{t}"] = _auc(loss_t[:, j], loss_p[:, j])
    m["loss/f1"] = _f1(loss_t, loss_hat)
    m["loss/auc"] = _auc(loss_t, loss_p)
    m["loss/acc"] = float((loss_t == loss_hat).mean())
    gidx = np.asarray(LOSS_GROUP_INDEX)
    group_t, group_p = np.asarray(targets.group), pred.group_prob
    for g, name in enumerate(GROUP_NAMES):
        m[f"loss/f1/group/{name}"] = _f1(loss_t[:, gidx == g], loss_hat[:, gidx == g])
        m[f"group/f1/{name}"] = _f1(group_t[:, g], group_p[:, g] >= threshold)
        m[f"group/auc/{name}"] = _auc(group_t[:, g], group_p[:, g])
    m["group/f1"] = _f1(group_t, group_p >= threshold)
    m["group/auc"] = _auc(group_t, group_p)
    m["score"] = parsing_score(m)
    return m


def gm_targets(targets: TargetArrays, gm_ids: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, TargetArrays, np.ndarray]:
    """Per-image targets -> (sorted unique GM ids, one target row per GM, image -> GM index)."""
    ids, first, inv = np.unique(np.asarray(gm_ids), return_index=True, return_inverse=True)
    return ids, _as_arrays(targets).take(first), inv


def gm_level(pred: Predictions, targets: TargetArrays, gm_ids: Sequence[Any] | np.ndarray
             ) -> tuple[np.ndarray, Predictions, TargetArrays]:
    """Per-image predictions and targets -> (sorted GM ids, one averaged prediction row per GM,
    that GM's targets), rows aligned."""
    ids, gm_pred = pred.aggregate(gm_ids)
    _, gm_t, _ = gm_targets(targets, gm_ids)
    return ids, gm_pred, gm_t


def _as_arrays(t: TargetArrays) -> TargetArrays:
    return TargetArrays(np.asarray(t.continuous), np.asarray(t.discrete), np.asarray(t.loss), np.asarray(t.group))


def shuffle_columns(targets: TargetArrays, rng: np.random.Generator) -> TargetArrays:
    """Random ground truth: every label column permuted independently across rows (GMs),
    so each column keeps its distribution but loses its link to the images."""

    def perm(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a).copy()
        for j in range(a.shape[1]):
            a[:, j] = a[rng.permutation(len(a)), j]
        return a

    return TargetArrays(perm(targets.continuous), perm(targets.discrete), perm(targets.loss), perm(targets.group))


@dataclass
class LevelReport:
    """Model metrics, mean/std over shuffled-label baselines and permutation p-values."""

    model: dict[str, float]
    baseline: dict[str, float]
    baseline_std: dict[str, float]
    p_value: dict[str, float]
    n_shuffles: int = 0
    shuffles: list[dict[str, float]] = field(default_factory=list, repr=False)


def _p_value(model: float, shuffled: np.ndarray, lower: bool) -> float:
    """(1 + #shuffles at least as good as the model) / (1 + #shuffles): the permutation p-value."""
    s = shuffled[np.isfinite(shuffled)]
    if not np.isfinite(model) or len(s) == 0:
        return float("nan")
    better = (s <= model) if lower else (s >= model)
    return float((1 + better.sum()) / (1 + len(s)))


def _level_report(model: dict[str, float], shuffles: list[dict[str, float]]) -> LevelReport:
    base, std, p = {}, {}, {}
    for k, v in model.items():
        s = np.array([d[k] for d in shuffles], dtype=np.float64)
        finite = s[np.isfinite(s)]
        base[k] = float(finite.mean()) if len(finite) else float("nan")
        std[k] = float(finite.std()) if len(finite) else float("nan")
        p[k] = _p_value(v, s, lower_is_better(k))
    return LevelReport(model, base, std, p, len(shuffles), shuffles)


def evaluate_parsing(
    pred: Predictions,
    targets: TargetArrays,
    gm_ids: Sequence[Any] | np.ndarray,
    ranges: Ranges | None = None,
    n_shuffles: int = 20,
    seed: int = 0,
) -> dict[str, LevelReport]:
    """Image- and GM-level metrics of per-image predictions against per-image targets, each
    beside the random-ground-truth baseline (same predictions scored against GM-level labels
    shuffled per column, ``n_shuffles`` seeded shuffles) with permutation p-values.

    GM level averages each GM's image predictions before scoring.
    """
    ids, gm_t, inv = gm_targets(targets, gm_ids)
    _, gm_pred = pred.aggregate(gm_ids)
    model = {
        "image": parsing_metrics(pred, gm_t.take(inv), ranges),
        "gm": parsing_metrics(gm_pred, gm_t, ranges),
    }
    rng = np.random.default_rng(seed)
    shuffles: dict[str, list[dict[str, float]]] = {"image": [], "gm": []}
    for _ in range(n_shuffles):
        shuffled = shuffle_columns(gm_t, rng)
        shuffles["image"].append(parsing_metrics(pred, shuffled.take(inv), ranges))
        shuffles["gm"].append(parsing_metrics(gm_pred, shuffled, ranges))
    return {lvl: _level_report(model[lvl], shuffles[lvl]) for lvl in LEVELS}


def metric_table(report: dict[str, LevelReport]) -> list[dict[str, Any]]:
    """Flat rows (level, group, metric, model, baseline, baseline_std, p_value) for printing/CSV."""
    rows = []
    for level, r in report.items():
        for name, v in r.model.items():
            group, _, metric = name.partition("/")
            rows.append(
                {
                    "level": level,
                    "group": group,
                    "metric": metric or group,
                    "model": v,
                    "baseline": r.baseline.get(name, float("nan")),
                    "baseline_std": r.baseline_std.get(name, float("nan")),
                    "p_value": r.p_value.get(name, float("nan")),
                }
            )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Fixed-width text of :func:`metric_table` rows."""
    lines = [f"{'level':6} {'group':10} {'metric':34} {'model':>10} {'baseline':>10} {'p':>7}"]
    for r in rows:
        lines.append(
            f"{r['level']:6} {r['group']:10} {r['metric']:34} {r['model']:10.4f} {r['baseline']:10.4f} {r['p_value']:7.3f}"
        )
    return "\n".join(lines)


def _sk_auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def detection_metrics(
    fake_prob: np.ndarray, is_fake: np.ndarray, gm_ids: Sequence[Any] | np.ndarray | None = None
) -> dict[str, float]:
    """AUC and accuracy (threshold 0.5) of real-vs-fake scores; GM level averages per GM."""
    p, y = np.asarray(fake_prob, dtype=np.float64).ravel(), np.asarray(is_fake).astype(np.int64).ravel()
    m = {"image/auc": _sk_auc(y, p), "image/accuracy": float(((p >= 0.5) == y).mean())}
    if gm_ids is not None:
        ids, first, inv = np.unique(np.asarray(gm_ids), return_index=True, return_inverse=True)
        gp = np.bincount(inv, weights=p) / np.bincount(inv)
        gy = y[first]
        m["gm/auc"] = _sk_auc(gy, gp)
        m["gm/accuracy"] = float(((gp >= 0.5) == gy).mean())
    return m


def attribution_metrics(
    probs: np.ndarray, true: np.ndarray, gm_ids: Sequence[Any] | np.ndarray | None = None, n_classes: int | None = None
) -> dict[str, Any]:
    """Accuracy and confusion matrix (rows true, cols predicted) of source-class probabilities [n, K].

    GM level (given gm_ids) averages class probabilities over each GM's images first.
    """
    probs = np.asarray(probs, dtype=np.float64)
    true = np.asarray(true).astype(np.int64).ravel()
    labels = np.arange(n_classes or probs.shape[1])
    pred = probs.argmax(axis=1)
    out: dict[str, Any] = {
        "image/accuracy": float(accuracy_score(true, pred)),
        "image/confusion": confusion_matrix(true, pred, labels=labels),
    }
    if gm_ids is not None:
        _, first, inv = np.unique(np.asarray(gm_ids), return_index=True, return_inverse=True)
        gprobs = np.zeros((len(first), probs.shape[1]))
        np.add.at(gprobs, inv, probs)
        gpred, gtrue = gprobs.argmax(axis=1), true[first]
        out["gm/accuracy"] = float(accuracy_score(gtrue, gpred))
        out["gm/confusion"] = confusion_matrix(gtrue, gpred, labels=labels)
    return out
