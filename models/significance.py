"""Pooled GM-level significance: vectorized metrics, the random-ground-truth permutation test
and a paired comparison of two parsers on the same GMs.

Every fake GM is a test GM in exactly one fold, so the folds' GM-level predictions pool into
one table over all GMs. The metrics below are the headline parsing metrics of
:func:`models.metrics.parsing_metrics` computed for S label sets (or prediction sets) at once
with numpy broadcasting, so thousands of shuffles cost seconds and p-values resolve 0.001.
tests/test_significance.py checks they equal ``parsing_metrics`` row for row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gmparse.data_pipeline.schema import CONTINUOUS, DISCRETE_NAMES, LOSS_TYPES, NUM_CLASSES, TargetArrays

from .metrics import auc_rows, f1_rows, lower_is_better
from .predictions import Predictions

#: the pooled table's rows, in print order
HEADLINE: tuple[str, ...] = (
    "continuous/l1", "discrete/acc", "discrete/f1", "loss/f1", "loss/auc", "group/f1", "score",
)


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two [n, k] or [S, n, k] arrays broadcast to a common [S, n, k]."""
    a, b = (np.asarray(x)[None] if np.asarray(x).ndim == 2 else np.asarray(x) for x in (a, b))
    return np.broadcast_arrays(a, b)


def batched_metrics(cont_p: np.ndarray, disc_p: np.ndarray, loss_p: np.ndarray, group_p: np.ndarray,
                    cont_t: np.ndarray, disc_t: np.ndarray, loss_t: np.ndarray, group_t: np.ndarray,
                    threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Parsing metrics of S prediction/label sets at once -> {name: [S]}.

    Inputs are [S, n, k] (or [n, k], broadcast): continuous in [0, 1], hard discrete class
    indices, loss-type and group probabilities, and the matching targets.
    """
    cp, ct = _pair(cont_p, cont_t)
    dp, dt = _pair(disc_p, disc_t)
    lp, lt = _pair(loss_p, loss_t)
    gp, gt = _pair(group_p, group_t)
    s = max(len(cp), len(dp), len(lp), len(gp))
    m: dict[str, np.ndarray] = {}
    err = np.abs(cp - ct)
    m["continuous/l1"] = np.broadcast_to(err.mean(axis=(1, 2)), (s,))
    for j, k in enumerate(CONTINUOUS):
        m[f"continuous/l1/{k}"] = np.broadcast_to(err[:, :, j].mean(axis=1), (s,))
    accs, f1s = [], []
    for j, (name, n_cls) in enumerate(zip(DISCRETE_NAMES, NUM_CLASSES)):
        y, p = dt[:, :, j], dp[:, :, j]
        acc = (y == p).mean(axis=1)
        f1_sum = np.zeros(len(y))
        present = np.zeros(len(y))
        for c in range(n_cls):
            yc, pc = y == c, p == c
            denom = yc.sum(axis=1) + pc.sum(axis=1)
            f1_sum += np.where(denom > 0, 2.0 * (yc & pc).sum(axis=1) / np.maximum(denom, 1), 0.0)
            present += denom > 0
        f1 = f1_sum / np.maximum(present, 1)
        m[f"discrete/acc/{name}"] = np.broadcast_to(acc, (s,))
        m[f"discrete/f1/{name}"] = np.broadcast_to(f1, (s,))
        accs.append(acc)
        f1s.append(f1)
    m["discrete/acc"] = np.broadcast_to(np.mean(accs, axis=0), (s,))
    m["discrete/f1"] = np.broadcast_to(np.mean(f1s, axis=0), (s,))
    lt_b, lhat = lt.astype(bool), lp >= threshold
    m["loss/f1"] = np.broadcast_to(f1_rows(lt_b, lhat), (s,))
    m["loss/auc"] = np.broadcast_to(auc_rows(lt_b.reshape(len(lt_b), -1), lp.reshape(len(lp), -1)), (s,))
    for j, t in enumerate(LOSS_TYPES):
        m[f"loss/auc/{t}"] = np.broadcast_to(auc_rows(lt_b[:, :, j], lp[:, :, j]), (s,))
    gt_b = gt.astype(bool)
    m["group/f1"] = np.broadcast_to(f1_rows(gt_b, gp >= threshold), (s,))
    m["group/auc"] = np.broadcast_to(auc_rows(gt_b.reshape(len(gt_b), -1), gp.reshape(len(gp), -1)), (s,))
    m["score"] = (1.0 - m["continuous/l1"] + m["discrete/f1"] + m["loss/f1"]) / 3.0
    return {k: np.asarray(v, dtype=np.float64) for k, v in m.items()}


def _pred_arrays(p: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return p.continuous, p.discrete, p.loss_prob, p.group_prob


def _target_arrays(t: TargetArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (np.asarray(t.continuous, np.float64), np.asarray(t.discrete, np.int64),
            np.asarray(t.loss, np.int64), np.asarray(t.group, np.int64))


def metrics_of(pred: Predictions, targets: TargetArrays) -> dict[str, float]:
    """The batched metrics of one prediction set (S = 1) as floats."""
    return {k: float(v[0]) for k, v in batched_metrics(*_pred_arrays(pred), *_target_arrays(targets)).items()}


def _shuffled(a: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Column-wise permuted copies of [n, k]: perms [S, n, k] row indices -> [S, n, k]."""
    return np.take_along_axis(np.broadcast_to(a[None], perms.shape), perms, axis=1)


def _column_perms(rng: np.random.Generator, s: int, n: int, k: int) -> np.ndarray:
    return rng.permuted(np.broadcast_to(np.arange(n)[None, :, None], (s, n, k)), axis=1)


@dataclass
class RandomTest:
    """A parser's metrics beside the random-ground-truth baseline (each label column
    shuffled across GMs) with one-sided permutation p-values."""

    model: dict[str, float]
    random_mean: dict[str, float]
    random_std: dict[str, float]
    p_value: dict[str, float]
    n_shuffles: int


def random_ground_truth_test(pred: Predictions, targets: TargetArrays, n_shuffles: int = 2000,
                             seed: int = 0) -> RandomTest:
    """p = (1 + #shuffles scoring at least as well as the true labels) / (1 + n_shuffles)."""
    rng = np.random.default_rng(seed)
    t = _target_arrays(targets)
    n = len(t[0])
    shuffled = [_shuffled(a, _column_perms(rng, n_shuffles, n, a.shape[1])) for a in t]
    model = metrics_of(pred, targets)
    null = batched_metrics(*_pred_arrays(pred), *shuffled)
    mean, std, p = {}, {}, {}
    for k, v in model.items():
        s = null[k][np.isfinite(null[k])]
        mean[k] = float(s.mean()) if len(s) else float("nan")
        std[k] = float(s.std()) if len(s) else float("nan")
        if not np.isfinite(v) or not len(s):
            p[k] = float("nan")
            continue
        as_good = (s <= v + 1e-12) if lower_is_better(k) else (s >= v - 1e-12)
        p[k] = float((1 + as_good.sum()) / (1 + len(s)))
    return RandomTest(model, mean, std, p, n_shuffles)


@dataclass
class PairedTest:
    """Parser A against parser B on the same GMs: A - B (signed so that positive = A better),
    a two-sided paired permutation p-value (each GM's two predictions swapped at random) and
    a bootstrap 95% interval over GMs."""

    a: dict[str, float]
    b: dict[str, float]
    diff: dict[str, float]
    p_value: dict[str, float]
    ci_low: dict[str, float]
    ci_high: dict[str, float]
    n_permutations: int


def paired_test(pred_a: Predictions, pred_b: Predictions, targets: TargetArrays, n_permutations: int = 2000,
                seed: int = 0) -> PairedTest:
    rng = np.random.default_rng(seed)
    t = _target_arrays(targets)
    pa, pb = _pred_arrays(pred_a), _pred_arrays(pred_b)
    n = len(t[0])
    ma, mb = metrics_of(pred_a, targets), metrics_of(pred_b, targets)
    swap = rng.random((n_permutations, n)) < 0.5
    sa = [np.where(swap[:, :, None], y[None], x[None]) for x, y in zip(pa, pb)]
    sb = [np.where(swap[:, :, None], x[None], y[None]) for x, y in zip(pa, pb)]
    null_a, null_b = batched_metrics(*sa, *t), batched_metrics(*sb, *t)
    boot = rng.integers(0, n, size=(n_permutations, n))
    tb = [x[boot] for x in t]
    boot_a = batched_metrics(*[x[boot] for x in pa], *tb)
    boot_b = batched_metrics(*[x[boot] for x in pb], *tb)
    diff, p, lo, hi = {}, {}, {}, {}
    for k in ma:
        sign = -1.0 if lower_is_better(k) else 1.0
        d = sign * (ma[k] - mb[k])
        diff[k] = float(d)
        nd = sign * (null_a[k] - null_b[k])
        nd = nd[np.isfinite(nd)]
        p[k] = float((1 + (np.abs(nd) >= abs(d) - 1e-12).sum()) / (1 + len(nd))) if np.isfinite(d) and len(nd) else float("nan")
        bd = sign * (boot_a[k] - boot_b[k])
        bd = bd[np.isfinite(bd)]
        lo[k], hi[k] = (float(np.percentile(bd, 2.5)), float(np.percentile(bd, 97.5))) if len(bd) else (np.nan, np.nan)
    return PairedTest(ma, mb, diff, p, lo, hi, n_permutations)


#: rows of the pooled table beyond HEADLINE: each discrete value's accuracy (the user-facing reads)
DETAIL: tuple[str, ...] = tuple(f"discrete/acc/{k}" for k in DISCRETE_NAMES)


def pooled_table(parser: Predictions, classical: Predictions, targets: TargetArrays, n_shuffles: int = 2000,
                 seed: int = 0, names: tuple[str, ...] = HEADLINE + DETAIL,
                 prior: Predictions | None = None) -> list[dict[str, float | str]]:
    """The headline table over all GMs: FEN+PN, the classical baseline and random ground truth,
    with p(FEN+PN beats random), p(classical beats random) and the paired FEN+PN - classical
    difference (positive = FEN+PN better) with its 95% bootstrap interval and p-value; with
    ``prior`` (:meth:`Predictions.prior`, per fold) also what the image-blind answer scores."""
    rp = random_ground_truth_test(parser, targets, n_shuffles, seed)
    rc = random_ground_truth_test(classical, targets, n_shuffles, seed)
    pt = paired_test(parser, classical, targets, n_shuffles, seed)
    mp = metrics_of(prior, targets) if prior is not None else {}
    return [
        {"metric": k, "fen_pn": rp.model[k], "classical": rc.model[k], "prior": mp.get(k, float("nan")),
         "random": rp.random_mean[k],
         "random_std": rp.random_std[k], "p_fen_pn_vs_random": rp.p_value[k], "p_classical_vs_random": rc.p_value[k],
         "fen_pn_minus_classical": pt.diff[k], "diff_ci_low": pt.ci_low[k], "diff_ci_high": pt.ci_high[k],
         "p_fen_pn_vs_classical": pt.p_value[k], "gms": len(targets.continuous), "shuffles": n_shuffles}
        for k in names
    ]


def format_pooled(rows: list[dict[str, float | str]]) -> str:
    """Fixed-width text of :func:`pooled_table` (lower is better only for continuous L1; "prior"
    is the image-blind answer, nan where the table has none)."""
    head = (f"{'metric (GM level)':36} {'FEN+PN':>7} {'classic':>7} {'prior':>7} {'random':>15} {'p FEN>rnd':>9} "
            f"{'p cls>rnd':>9} {'FEN-classic [95% CI]':>24} {'p paired':>8}")
    lines = [head]
    for r in rows:
        name = str(r["metric"]) + (" (lower=better)" if lower_is_better(str(r["metric"])) else "")
        ci = f"{r['fen_pn_minus_classical']:+.3f} [{r['diff_ci_low']:+.3f},{r['diff_ci_high']:+.3f}]"
        lines.append(f"{name:36} {r['fen_pn']:7.3f} {r['classical']:7.3f} {r['prior']:7.3f} "
                     f"{r['random']:7.3f} ± {r['random_std']:.3f} "
                     f"{r['p_fen_pn_vs_random']:9.4f} {r['p_classical_vs_random']:9.4f} {ci:>24} "
                     f"{r['p_fen_pn_vs_classical']:8.4f}")
    return "\n".join(lines)
