"""Schema: names and order, normalization, GMLabels validation, RED116 layout round-trip."""

from pathlib import Path

import numpy as np
import pytest

from gmparse.data_pipeline import schema

RED116_DIR = Path(__file__).resolve().parents[2] / "shared" / "red116"


def _labels(i: int = 0) -> schema.GMLabels:
    rng = np.random.default_rng(i)
    return schema.GMLabels(
        continuous={k: float(rng.uniform(lo, hi)) for k, (lo, hi) in schema.RED116_RANGES.items()},
        discrete={k: int(rng.integers(len(v))) for k, v in schema.DISCRETE.items()},
        loss_types=frozenset(rng.choice(schema.LOSS_TYPES, size=3, replace=False).tolist()),
    )


def test_schema_shape_matches_red116():
    assert len(schema.CONTINUOUS) == 9 and len(schema.DISCRETE) == 6
    assert len(schema.ARCHITECTURE) == 15
    assert schema.NUM_CLASSES == (4, 4, 4, 2, 2, 2)
    assert len(schema.LOSS_TYPES) == 10 and schema.GROUP_NAMES == ("pixel", "discriminator", "classification")
    assert schema.LOSS_GROUP_INDEX == (0, 0, 0, 0, 1, 1, 1, 1, 1, 2)
    assert len(set(schema.label_columns())) == len(schema.label_columns()) == 9 + 9 + 6 + 10 + 3


def test_ranges_normalize_roundtrip_and_clip():
    raw = np.array([[1, 0, 0, 0, 0, 0, 0, 0, 300_304], [105, 92, 40, 35, 57, 8365, 15, 20, 266_907_367]], float)
    norm = schema.RED116.normalize(raw)
    assert np.allclose(norm[0], 0) and np.allclose(norm[1], 1)
    assert np.allclose(schema.RED116.denormalize(norm), raw)
    assert schema.RED116.normalize(raw * 2).max() == 1.0
    fitted = schema.Ranges.fit(np.ones((3, 9)))  # constant columns get a width, no division by zero
    assert np.all(np.isfinite(fitted.normalize(np.ones(9))))
    assert schema.Ranges.from_dict(schema.RED116.to_dict()) == schema.RED116


def test_gm_labels_rows_and_groups():
    lab = schema.GMLabels(
        continuous=dict.fromkeys(schema.CONTINUOUS, 3.0),
        discrete={"norm_type": 1, "last_layer_nonlinearity": 1, "last_block_nonlinearity": 0,
                  "upsampling": 1, "skip_connection": 0, "downsampling": 1},
        loss_types={"l1", "hinge"},
    )
    assert lab.loss_groups == {"pixel", "discriminator"}
    assert lab.group_vector().tolist() == [1, 1, 0]
    assert lab.discrete_names()["norm_type"] == "instance"
    row = lab.to_row(schema.RED116)
    assert schema.GMLabels.from_row(row) == lab
    t = schema.targets_from_rows([row, row])
    assert t.continuous.shape == (2, 9) and t.discrete.shape == (2, 6) and t.loss.shape == (2, 10)


def test_gm_labels_dict_roundtrip_is_plain_json():
    """The builds persist each GM's labels as JSON and read them back on resume."""
    import json

    lab = _labels(3)
    d = json.loads(json.dumps(lab.to_dict()))
    assert schema.GMLabels.from_dict(d) == lab
    assert d["loss_types"] == sorted(lab.loss_types)
    with pytest.raises(schema.SchemaError):  # a tampered record is refused, not read
        schema.GMLabels.from_dict({**d, "loss_types": ["l3"]})


@pytest.mark.parametrize(
    "bad",
    [
        {"discrete": {"norm_type": 4}},
        {"discrete": {"skip_connection": 2}},
        {"loss_types": {"l3"}},
        {"continuous": {"num_layers": -1.0}},
    ],
)
def test_gm_labels_reject_bad_values(bad):
    good = _labels()
    kw = {"continuous": dict(good.continuous), "discrete": dict(good.discrete), "loss_types": set(good.loss_types)}
    for k, v in bad.items():
        if isinstance(v, dict):
            kw[k].update(v)
        else:
            kw[k] = v
    with pytest.raises(schema.SchemaError):
        schema.GMLabels(**kw)


def test_red116_roundtrip_synthetic():
    labs = [_labels(i) for i in range(20)]
    net, loss, group = schema.to_red116(labs)
    assert net.shape == (20, 15) and loss.shape == (20, 10) and group.shape == (20, 3)
    back = schema.from_red116(net, loss)
    for a, b in zip(labs, back):
        assert a.discrete == b.discrete and a.loss_types == b.loss_types
        assert np.allclose(a.continuous_vector(), b.continuous_vector())


def test_red116_rejects_bad_rows_naming_the_row():
    net, loss, _ = schema.to_red116([_labels(i) for i in range(3)])
    net[2, 9] = 7  # norm type out of range
    with pytest.raises(schema.SchemaError, match="row 2"):
        schema.from_red116(net, loss)
    with pytest.raises(schema.SchemaError, match=r"\[3, 14\]"):
        schema.from_red116(net[:, :14], loss)


@pytest.mark.skipif(not RED116_DIR.exists(), reason="shared RED116 ground truth not present")
def test_real_red116_files_roundtrip():
    net = np.load(RED116_DIR / "ground_truth_net_116_15dim.npy")
    loss = np.load(RED116_DIR / "ground_truth_loss_116_9dim.npy")
    group = np.load(RED116_DIR / "ground_truth_loss_116_3dim.npy")
    labs = schema.from_red116(net, loss)
    assert len(labs) == 116
    net2, loss2, group2 = schema.to_red116(labs)
    assert np.allclose(net2, net, atol=1e-9) and np.array_equal(loss2, loss)
    # the published group matrix is the OR of its members except for one row (README)
    assert (group2 != group).any(axis=1).sum() <= 1
