"""Pooled significance: vectorized metrics equal parsing_metrics; the random-ground-truth and
paired permutation tests separate informative predictions from noise."""

from __future__ import annotations

import numpy as np

from gmparse.data_pipeline.schema import (
    CONTINUOUS,
    GROUP_NAMES,
    LOSS_TYPES,
    NUM_CLASSES,
    TargetArrays,
    groups_from_losses,
)
from gmparse.models.metrics import parsing_metrics
from gmparse.models.predictions import Predictions
from gmparse.models.significance import (
    HEADLINE,
    format_pooled,
    metrics_of,
    paired_test,
    pooled_table,
    random_ground_truth_test,
)


def _targets(n: int, seed: int) -> TargetArrays:
    rng = np.random.default_rng(seed)
    loss = rng.integers(0, 2, (n, len(LOSS_TYPES)))
    loss[0], loss[1] = 0, 1
    return TargetArrays(rng.uniform(0, 1, (n, len(CONTINUOUS))), rng.integers(0, 2, (n, len(NUM_CLASSES))),
                        loss, groups_from_losses(loss))


def _noisy(t: TargetArrays, noise: float, seed: int) -> Predictions:
    """Predictions that agree with ``t`` up to ``noise`` (0 = perfect, 1 = unrelated)."""
    rng = np.random.default_rng(seed)
    n = len(t.continuous)
    cont = np.clip((1 - noise) * t.continuous + noise * rng.uniform(0, 1, t.continuous.shape), 0, 1)
    probs = []
    for j, c in enumerate(NUM_CLASSES):
        p = rng.dirichlet(np.ones(c), n) * noise
        p[np.arange(n), t.discrete[:, j]] += 1 - noise
        probs.append(p / p.sum(1, keepdims=True))
    loss = (1 - noise) * t.loss + noise * rng.uniform(0, 1, t.loss.shape)
    group = (1 - noise) * t.group + noise * rng.uniform(0, 1, (n, len(GROUP_NAMES)))
    return Predictions(cont, tuple(probs), group, loss)


def test_vectorized_metrics_equal_parsing_metrics() -> None:
    t = _targets(40, 0)
    for noise in (0.0, 0.4, 1.0):
        pred = _noisy(t, noise, 1)
        ref = parsing_metrics(pred, t)
        got = metrics_of(pred, t)
        for k, v in got.items():
            assert k in ref, k
            np.testing.assert_allclose(v, ref[k], rtol=1e-9, atol=1e-12, err_msg=k)
        assert set(HEADLINE) <= set(got)


def test_random_test_resolves_small_p_and_keeps_noise_insignificant() -> None:
    t = _targets(60, 2)
    good = random_ground_truth_test(_noisy(t, 0.3, 3), t, n_shuffles=2000, seed=0)
    for k in ("continuous/l1", "discrete/acc", "discrete/f1", "loss/auc"):
        assert good.p_value[k] < 0.001, (k, good.p_value[k])
    assert good.model["continuous/l1"] < good.random_mean["continuous/l1"]
    noise = random_ground_truth_test(_noisy(t, 1.0, 4), t, n_shuffles=2000, seed=0)
    assert np.nanmedian([noise.p_value[k] for k in HEADLINE]) > 0.05


def test_paired_test_finds_the_better_parser_and_not_a_copy() -> None:
    t = _targets(60, 5)
    a, b = _noisy(t, 0.2, 6), _noisy(t, 0.9, 7)
    res = paired_test(a, b, t, n_permutations=1000, seed=0)
    assert res.diff["continuous/l1"] > 0 and res.diff["discrete/acc"] > 0  # positive = A better, L1 included
    assert res.p_value["discrete/acc"] < 0.01 and res.ci_low["discrete/acc"] > 0
    same = paired_test(a, a, t, n_permutations=200, seed=0)
    assert same.diff["discrete/acc"] == 0 and same.p_value["discrete/acc"] == 1.0


def test_prior_is_the_image_blind_answer_and_joins_the_pooled_table() -> None:
    train = TargetArrays(np.array([[0.1] * 9, [0.3] * 9, [0.9] * 9]), np.array([[0, 1, 1, 0, 1, 1]] * 2 + [[2, 0, 3, 1, 0, 0]]),
                         np.array([[1] + [0] * 9] * 2 + [[0] * 9 + [1]]), np.array([[1, 0, 0]] * 2 + [[0, 0, 1]]))
    prior = Predictions.prior(train, 5)
    assert len(prior) == 5
    np.testing.assert_allclose(prior.continuous, 0.3)  # the median: the constant with the least L1
    assert (prior.discrete == [0, 1, 1, 0, 1, 1]).all()  # each value's most common training class
    np.testing.assert_allclose(prior.loss_prob[0, [0, 9]], [2 / 3, 1 / 3])
    np.testing.assert_allclose(prior.group_prob[0], [2 / 3, 0, 1 / 3])
    t = _targets(60, 8)
    rows = pooled_table(_noisy(t, 0.3, 9), _noisy(t, 0.6, 10), t, n_shuffles=200, seed=0,
                        prior=Predictions.prior(t, 60))
    by = {r["metric"]: r for r in rows}
    # informative predictions beat the image-blind answer, which knows no GM apart from another
    assert by["discrete/acc"]["fen_pn"] > by["discrete/acc"]["prior"] >= 0.4
    assert by["continuous/l1"]["fen_pn"] < by["continuous/l1"]["prior"]
    assert "prior" in format_pooled(rows).splitlines()[0]
    assert np.isnan(pooled_table(_noisy(t, 0.3, 9), _noisy(t, 0.6, 10), t, n_shuffles=50)[0]["prior"])
