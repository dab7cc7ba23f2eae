"""Metric values on hand-computed cases, GM aggregation, the shuffled baseline and p-values."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from gmparse.data_pipeline.schema import (
    CONTINUOUS,
    DISCRETE_NAMES,
    GROUP_NAMES,
    LOSS_TYPES,
    NUM_CLASSES,
    Ranges,
    TargetArrays,
    groups_from_losses,
)
from gmparse.models.metrics import (
    attribution_metrics,
    detection_metrics,
    evaluate_parsing,
    format_table,
    metric_table,
    parsing_metrics,
    parsing_score,
    shuffle_columns,
)
from gmparse.models.predictions import Predictions


def _one_hot(idx: np.ndarray, c: int) -> np.ndarray:
    return np.eye(c)[idx]


def _perfect(t: TargetArrays) -> Predictions:
    """Predictions equal to the targets (probabilities 0/1)."""
    return Predictions(
        t.continuous.astype(float),
        tuple(_one_hot(t.discrete[:, j], c) for j, c in enumerate(NUM_CLASSES)),
        t.group.astype(float),
        t.loss.astype(float),
    )


def _targets(n: int, seed: int) -> TargetArrays:
    rng = np.random.default_rng(seed)
    loss = rng.integers(0, 2, (n, len(LOSS_TYPES)))
    loss[0], loss[1] = 0, 1  # every column has both classes
    return TargetArrays(
        rng.uniform(0, 1, (n, len(CONTINUOUS))),
        np.stack([np.arange(n) % c for c in NUM_CLASSES], axis=1),
        loss,
        groups_from_losses(loss),
    )


def test_perfect_predictions_score_one() -> None:
    t = _targets(8, 0)
    m = parsing_metrics(_perfect(t), t)
    assert m["continuous/l1"] == 0.0
    assert m["discrete/acc"] == 1.0 and m["discrete/f1"] == 1.0
    assert m["loss/f1"] == 1.0 and m["loss/auc"] == 1.0
    assert m["group/f1"] == 1.0
    assert m["score"] == pytest.approx(1.0)


def test_hand_computed_values() -> None:
    t = _targets(4, 1)
    p = _perfect(t)
    p.continuous[:, 0] = t.continuous[:, 0] + np.array([0.1, -0.3, 0.0, 0.2])  # L1 = 0.15 on column 0
    # norm_type truth [0,1,2,3]; predict [0,1,2,2] -> acc 0.75, per-class F1 [1,1,2/3,0] -> macro 2/3
    p.discrete_probs[0][:] = _one_hot(np.array([0, 1, 2, 2]), 4)
    # l1 truth column, predictions: flip one positive to 0.4 (below threshold)
    j = LOSS_TYPES.index("l1")
    t.loss[:, j] = [1, 1, 0, 0]
    p.loss_prob[:, j] = [0.9, 0.4, 0.2, 0.1]
    ranges = Ranges.from_pairs({k: (0.0, 10.0) for k in CONTINUOUS})
    m = parsing_metrics(p, t, ranges)
    assert m[f"continuous/l1/{CONTINUOUS[0]}"] == pytest.approx(0.15)
    assert m["continuous/l1"] == pytest.approx(0.15 / len(CONTINUOUS))
    assert m[f"continuous/l1_raw/{CONTINUOUS[0]}"] == pytest.approx(1.5)
    assert m["discrete/acc/norm_type"] == 0.75
    assert m["discrete/f1/norm_type"] == pytest.approx(2 / 3)
    assert m["loss/f1/l1"] == pytest.approx(2 / 3)  # P=1, R=1/2
    assert m["loss/auc/l1"] == 1.0  # ranking still perfect
    expected = np.mean([1 - m["continuous/l1"], m["discrete/f1"], m["loss/f1"]])
    assert parsing_score(m) == pytest.approx(expected) == m["score"]


def test_auc_undefined_for_single_class_is_nan() -> None:
    t = _targets(4, 2)
    t.loss[:, 0] = 1
    m = parsing_metrics(_perfect(t), t)
    assert np.isnan(m[f"loss/auc/{LOSS_TYPES[0]}"])


def test_aggregate_by_gm() -> None:
    p = Predictions(
        np.array([[0.0] * 9, [1.0] * 9, [0.5] * 9]),
        tuple(np.full((3, c), 1 / c) for c in NUM_CLASSES),
        np.array([[0.2] * 3, [0.4] * 3, [1.0] * 3]),
        np.zeros((3, 10)),
    )
    ids, g = p.aggregate(["b", "a", "b"])
    assert list(ids) == ["a", "b"]
    assert np.allclose(g.continuous[:, 0], [1.0, 0.25])
    assert np.allclose(g.group_prob[:, 0], [0.4, 0.6])


def test_shuffle_keeps_column_distribution() -> None:
    t = _targets(20, 3)
    s = shuffle_columns(t, np.random.default_rng(0))
    for a, b in [(t.continuous, s.continuous), (t.discrete, s.discrete), (t.loss, s.loss), (t.group, s.group)]:
        assert np.array_equal(np.sort(a, axis=0), np.sort(b, axis=0))
    assert not np.array_equal(t.continuous, s.continuous)


def test_baseline_and_p_value_separate_good_from_random() -> None:
    t_gm = _targets(12, 4)
    gm_ids = np.repeat(np.arange(12), 3)
    t_img = TargetArrays(t_gm.continuous[gm_ids], t_gm.discrete[gm_ids], t_gm.loss[gm_ids], t_gm.group[gm_ids])
    good = evaluate_parsing(_perfect(t_img), t_img, gm_ids, n_shuffles=19, seed=0)
    for level in ("image", "gm"):
        r = good[level]
        assert r.n_shuffles == 19
        assert r.model["score"] == pytest.approx(1.0)
        assert r.baseline["score"] < 0.8
        assert r.p_value["score"] == pytest.approx(1 / 20)  # no shuffle as good as the truth
        assert r.p_value["continuous/l1"] == pytest.approx(1 / 20)  # lower-is-better handled
    # predictions unrelated to the labels: the baseline is as good as the model
    rng = np.random.default_rng(9)
    other = _targets(12, 99)
    perm = rng.permutation(12)[gm_ids]
    random_pred = _perfect(TargetArrays(other.continuous[perm], other.discrete[perm], other.loss[perm], other.group[perm]))
    bad = evaluate_parsing(random_pred, t_img, gm_ids, n_shuffles=19, seed=0)["gm"]
    assert bad.p_value["score"] > 0.05
    assert abs(bad.model["score"] - bad.baseline["score"]) < 0.15


def test_metric_table_rows() -> None:
    t = _targets(6, 5)
    gm_ids = np.arange(6)
    rows = metric_table(evaluate_parsing(_perfect(t), t, gm_ids, n_shuffles=3))
    assert {"level", "group", "metric", "model", "baseline", "p_value"} <= set(rows[0])
    names = {(r["level"], r["group"], r["metric"]) for r in rows}
    assert ("gm", "loss", "f1") in names and ("image", "score", "score") in names
    assert ("gm", "discrete", f"f1/{DISCRETE_NAMES[0]}") in names
    assert ("gm", "group", f"auc/{GROUP_NAMES[0]}") in names
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    assert "score" in format_table(rows)


def test_detection_metrics() -> None:
    m = detection_metrics([0.9, 0.8, 0.3, 0.6], [1, 1, 0, 0], gm_ids=["g1", "g1", "real", "real"])
    assert m["image/auc"] == 1.0
    assert m["image/accuracy"] == 0.75
    assert m["gm/accuracy"] == 1.0  # real averages to 0.45
    assert np.isnan(detection_metrics([0.1, 0.2], [1, 1])["image/auc"])


def test_attribution_metrics() -> None:
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    true = np.array([0, 1, 1, 2])
    m = attribution_metrics(probs, true, gm_ids=true)
    assert m["image/accuracy"] == 0.75
    assert m["image/confusion"].tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert m["gm/accuracy"] == 1.0  # gm 1 averages to [0.4, 0.5, 0.1]
    assert m["gm/confusion"].trace() == 3


def test_fast_metrics_agree_with_sklearn() -> None:
    from sklearn.metrics import f1_score, roc_auc_score

    from gmparse.models.metrics import _auc, _f1, _macro_f1

    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 30)
        s = rng.integers(0, 5, 30) / 4  # ties on purpose
        assert _auc(y, s) == pytest.approx(roc_auc_score(y, s))
        assert _f1(y, s >= 0.5) == pytest.approx(f1_score(y, s >= 0.5, zero_division=0))
        yc, pc = rng.integers(0, 4, 30), rng.integers(0, 3, 30)
        assert _macro_f1(yc, pc) == pytest.approx(f1_score(yc, pc, average="macro", zero_division=0))
    assert _f1(np.zeros(4), np.zeros(4)) == 0.0


def test_gm_level_aligns_averaged_predictions_with_gm_targets() -> None:
    from gmparse.models.metrics import gm_level

    t = _targets(4, 3)
    rows = np.array([2, 0, 2, 1, 3, 0])  # images -> GM rows, out of order
    ids = np.array(["g2", "g0", "g2", "g1", "g3", "g0"])
    pred = _perfect(t.take(rows))
    gm_ids, gp, gt = gm_level(pred, t.take(rows), ids)
    assert gm_ids.tolist() == ["g0", "g1", "g2", "g3"]
    np.testing.assert_allclose(gt.continuous, t.continuous)  # GM g<k> is row k
    np.testing.assert_allclose(gp.continuous, t.continuous)
