"""Shapes, gradients, hierarchical gating, class weights, clusters, losses, Parser and save/load."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gmparse import models
from gmparse.data_pipeline.schema import (
    CONTINUOUS,
    DISCRETE,
    DISCRETE_NAMES,
    GROUP_NAMES,
    LOSS_GROUP_INDEX,
    LOSS_TYPES,
    NUM_CLASSES,
    RED116,
    SCHEMA_VERSION,
    TargetArrays,
    groups_from_losses,
)
from gmparse.models import (
    FEN,
    ConstraintWeights,
    DetectionAttributionModel,
    ModelConfig,
    Parser,
    ParsingModel,
    ParsingNetwork,
    class_weights,
    compute_loss,
    fit_clusters,
    heads_loss,
    targets_to_tensors,
)
from gmparse.models.parser import META_FILE

SMOKE = ModelConfig.preset("smoke")


def _targets(n: int, seed: int = 0) -> TargetArrays:
    rng = np.random.default_rng(seed)
    loss = rng.integers(0, 2, (n, len(LOSS_TYPES)))
    return TargetArrays(
        continuous=rng.uniform(0, 1, (n, len(CONTINUOUS))).astype(np.float32),
        discrete=np.stack([rng.integers(0, c, n) for c in NUM_CLASSES], axis=1),
        loss=loss,
        group=groups_from_losses(loss),
    )


def _grads_ok(module: torch.nn.Module) -> bool:
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    return all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_fen_keeps_size_and_backprops(size: int) -> None:
    fen = FEN(depth=3, width=8)
    x = torch.randn(1, 3, size, size)
    out = fen(x)
    assert out.shape == x.shape
    out.pow(2).mean().backward()
    assert _grads_ok(fen)


def test_fen_paper_layout() -> None:
    fen = FEN(17, 64)
    convs = [m for m in fen.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in fen.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == 17 and len(bns) == 15
    assert convs[0].in_channels == 3 and convs[0].out_channels == 64 and convs[-1].out_channels == 3
    with pytest.raises(ValueError):
        FEN(depth=1)


@pytest.mark.parametrize("variant", ["direct", "cluster"])
@pytest.mark.parametrize("size", [32, 64])
def test_pn_heads_shapes_and_gradients(variant: str, size: int) -> None:
    pn = ParsingNetwork(widths=(32, 64, 128, 256, 512), fc=64, branch=(32, 16), variant=variant, n_clusters=5)
    out = pn(torch.randn(2, 3, size, size))
    assert out["continuous"].shape == (2, len(CONTINUOUS))
    assert ((out["continuous"] >= 0) & (out["continuous"] <= 1)).all()
    assert [lg.shape[1] for lg in out["discrete_logits"]] == list(NUM_CLASSES)
    assert out["group_prob"].shape == (2, len(GROUP_NAMES))
    assert out["loss_prob"].shape == (2, len(LOSS_TYPES))
    if variant == "cluster":
        assert out["cluster_logits"].shape == (2, 5) and out["deviation"].shape == (2, len(CONTINUOUS))
    loss, _ = compute_loss(out, targets_to_tensors(_targets(2)))
    loss.backward()
    assert _grads_ok(pn)


def test_hierarchical_gating() -> None:
    pn = ParsingNetwork(widths=(8,), fc=16, branch=(8,), dropout=0.0)
    with torch.no_grad():
        pn.group_head.bias.copy_(torch.tensor([-30.0, 30.0, 30.0]))  # pixel group off, others on
        pn.group_head.weight.zero_()
    out = pn(torch.randn(4, 3, 32, 32))
    raw = torch.sigmoid(out["loss_logits"])
    gate = out["group_prob"][:, list(LOSS_GROUP_INDEX)]
    assert torch.allclose(out["loss_prob"], raw * gate)
    pixel = torch.tensor([g == 0 for g in LOSS_GROUP_INDEX])
    assert out["loss_prob"][:, pixel].max() < 1e-10  # members of a switched-off group are off
    assert torch.allclose(out["loss_prob"][:, ~pixel], raw[:, ~pixel])
    assert (out["loss_prob"] <= out["group_prob"][:, list(LOSS_GROUP_INDEX)] + 1e-7).all()


def test_class_weights_inverse_frequency() -> None:
    t = _targets(6)
    t.discrete[:, 0] = [0, 0, 0, 0, 1, 1]  # norm_type: 4 x class 0, 2 x class 1, classes 2-3 absent
    w = class_weights(t)
    assert len(w) == len(DISCRETE_NAMES)
    assert torch.allclose(w[0], torch.tensor([6 / (2 * 4), 6 / (2 * 2), 0.0, 0.0]))
    assert [len(x) for x in w] == list(NUM_CLASSES)


def test_binary_weights_balance_each_label_and_weigh_the_bce() -> None:
    from gmparse.models.losses import parsing_terms
    from gmparse.models.pn import binary_weights

    t = _targets(4)
    t.loss[:] = 0
    t.loss[:, 0] = [1, 0, 0, 0]  # type 0: 1 positive in 4 GMs; the other types never set
    t.group[:] = 1  # every group always on: nothing to balance
    w = binary_weights(t)
    assert torch.allclose(w["loss"][:, 0], torch.tensor([4 / (2 * 3), 4 / (2 * 1)]))
    assert torch.allclose(w["loss"][:, 1:], torch.ones(2, t.loss.shape[1] - 1))
    assert torch.allclose(w["group"], torch.ones(2, t.group.shape[1]))
    # the weighted BCE is the mean of per-element BCEs times each element's weight
    out = {"continuous": torch.zeros(4, len(CONTINUOUS)), "group_logits": torch.zeros(4, t.group.shape[1]),
           "discrete_logits": [torch.zeros(4, c) for c in NUM_CLASSES],
           "loss_prob": torch.full((4, t.loss.shape[1]), 0.25)}
    tgt = targets_to_tensors(t)
    plain = parsing_terms(out, tgt)["loss_type"]
    weighted = parsing_terms(out, tgt, binary_weights=w)["loss_type"]
    bce = -torch.where(tgt["loss"] > 0.5, torch.log(torch.tensor(0.25)), torch.log(torch.tensor(0.75)))
    elem_w = torch.where(tgt["loss"] > 0.5, w["loss"][1], w["loss"][0])
    assert plain == pytest.approx(float(bce.mean()), rel=1e-5)
    assert weighted == pytest.approx(float((bce * elem_w).mean()), rel=1e-5)
    assert weighted != pytest.approx(float(plain))


def test_fit_clusters_and_cluster_loss() -> None:
    t = _targets(30)
    t.continuous[:15] = 0.1
    t.continuous[15:] = 0.9
    centres = fit_clusters(t, n_clusters=4)
    assert centres.shape == (4, len(CONTINUOUS))  # 2 distinct vectors: padded by repeats
    assert np.allclose(np.sort(np.unique(centres.round(4), axis=0)[:, 0]), [0.1, 0.9])
    pn = ParsingNetwork(widths=(8,), fc=16, branch=(8,), variant="cluster", n_clusters=4)
    pn.set_centres(centres)
    _, log = compute_loss(pn(torch.randn(3, 3, 32, 32)), targets_to_tensors(t, [0, 15, 29]))
    assert {"cluster", "continuous", "discrete", "group", "loss_type"} <= set(log)
    with pytest.raises(ValueError):
        ParsingNetwork(widths=(8,), variant="direct").set_centres(centres)


def test_compute_loss_terms_and_scale() -> None:
    torch.manual_seed(0)
    model = ParsingModel(SMOKE)
    out = model(torch.randn(4, 3, 32, 32))
    tgt = targets_to_tensors(_targets(4))
    cw = class_weights(_targets(4))
    total, log = compute_loss(out, tgt, ConstraintWeights(), cw)
    parsing = log["continuous"] + log["discrete"] + log["group"] + log["loss_type"]
    assert log["parsing"] == pytest.approx(parsing, rel=1e-5)
    assert log["total"] == pytest.approx(10 * parsing + log["constraints"], rel=1e-5)
    assert {f"constraint/{k}" for k in ConstraintWeights().to_dict()} <= set(log)
    assert all(isinstance(v, float) for v in log.values())
    _, log_mse = compute_loss(out, tgt, continuous_loss="mse")
    assert log_mse["continuous"] != pytest.approx(log["continuous"])
    total.backward()
    assert _grads_ok(model)
    with pytest.raises(ValueError):
        compute_loss(out, tgt, continuous_loss="huber")
    # label smoothing moves the discrete CE only (a confident, right answer costs more)
    _, log_ls = compute_loss(out, tgt, ConstraintWeights(), cw, label_smoothing=0.2)
    assert log_ls["discrete"] != pytest.approx(log["discrete"])
    assert {k: log_ls[k] for k in ("continuous", "group", "loss_type")} == pytest.approx(
        {k: log[k] for k in ("continuous", "group", "loss_type")})


def test_targets_to_tensors_indexes_gm_rows() -> None:
    t = _targets(3)
    tt = targets_to_tensors(t, [2, 2, 0])
    assert tt["discrete"].dtype == torch.long and tt["loss"].dtype == torch.float32
    assert torch.equal(tt["discrete"][0], torch.as_tensor(t.discrete[2]))
    assert tt["continuous"].shape == (3, len(CONTINUOUS))


def test_heads_share_fen() -> None:
    fen = FEN(3, 8)
    model = DetectionAttributionModel(n_sources=5, fen=fen)
    out = model(torch.randn(4, 3, 64, 64))
    assert out["detection_logit"].shape == (4,) and out["attribution_logits"].shape == (4, 5)
    assert model.fen is fen
    total, log = heads_loss(out, torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 2, 4]))
    assert {"detection", "attribution", "constraints"} <= set(log)
    total.backward()
    assert _grads_ok(model)
    with pytest.raises(ValueError):
        heads_loss(DetectionAttributionModel(0, FEN(2, 4))(torch.randn(1, 3, 32, 32)), source=torch.tensor([0]))


def test_config_presets() -> None:
    paper = ModelConfig.preset("paper")
    assert (paper.fen_depth, paper.fen_width, paper.image_size) == (17, 64, 64)
    assert paper.pn_widths == (32, 64, 128, 256, 512)
    assert ModelConfig.preset("paper", task="detection").image_size == 128
    assert ModelConfig.from_dict(json.loads(json.dumps(paper.to_dict()))) == paper
    with pytest.raises(ValueError):
        ModelConfig.preset("huge")


def test_parser_predict_structure_and_aggregate() -> None:
    parser = Parser.from_config(SMOKE, RED116)
    imgs = np.random.default_rng(0).integers(0, 256, (3, 48, 40, 3), dtype=np.uint8)  # resized to 32
    rows = parser.predict(imgs)
    assert isinstance(rows, list) and len(rows) == 3
    r = rows[0]
    assert set(r["continuous"]) == set(CONTINUOUS) and set(r["loss_types"]) == set(LOSS_TYPES)
    for name in DISCRETE_NAMES:
        assert r["discrete"][name]["class"] in DISCRETE[name]
        assert sum(r["discrete"][name]["probs"].values()) == pytest.approx(1.0, abs=1e-5)
    lo, hi = RED116.lo["num_params"], RED116.hi["num_params"]
    assert r["continuous_raw"]["num_params"] == pytest.approx(lo + r["continuous"]["num_params"] * (hi - lo))
    agg = parser.predict(imgs, aggregate=True)
    assert isinstance(agg, dict)
    mean_l1 = np.mean([x["loss_types"]["l1"] for x in rows])
    assert agg["loss_types"]["l1"] == pytest.approx(mean_l1, abs=1e-6)
    json.dumps(rows)  # plain types only
    # already-normalized float tensors are accepted as is
    assert len(parser.predict(torch.randn(2, 3, 32, 32))) == 2


def test_save_load_roundtrip(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig.from_dict({**SMOKE.to_dict(), "variant": "cluster", "n_clusters": 3})
    parser = Parser.from_config(cfg, RED116)
    centres = parser.model.fit_centres(_targets(10))
    assert centres.shape == (3, len(CONTINUOUS))
    x = torch.randn(4, 3, 32, 32)
    before = parser.predict_arrays(x)
    parser.save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["schema_version"] == SCHEMA_VERSION and meta["config"]["variant"] == "cluster"
    loaded = Parser.load(tmp_path)
    after = loaded.predict_arrays(x)
    assert loaded.config == cfg and loaded.ranges == RED116
    assert np.allclose(before.continuous, after.continuous, atol=1e-6)
    assert np.allclose(before.loss_prob, after.loss_prob, atol=1e-6)
    assert torch.equal(loaded.model.pn.centres, parser.model.pn.centres)
    meta["schema_version"] = "9.0"
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="schema"):
        Parser.load(tmp_path)


def test_models_never_import_ray_or_mlflow() -> None:
    """Static check of every import in models/ (also catches lazy, in-function imports)."""
    root = Path(models.__file__).parent
    found = []
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [(path.name, n) for n in names if n.split(".")[0] in {"ray", "mlflow"}]
    assert not found


@pytest.mark.parametrize("pn_input", ["fingerprint", "spectrum", "both", "branch"])
def test_pn_input_variants_train_and_roundtrip(pn_input: str, tmp_path: Path) -> None:
    from dataclasses import replace

    from gmparse.models.config import ModelConfig
    from gmparse.models.parser import Parser, ParsingModel

    cfg = replace(ModelConfig.preset("smoke"), pn_input=pn_input)
    model = ParsingModel(cfg)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out["continuous"].shape == (4, 9)
    out["continuous"].sum().backward()  # the spectrum path is differentiable back into the FEN
    assert model.fen.body[0].weight.grad is not None and model.fen.body[0].weight.grad.abs().sum() > 0
    assert (model.spectrum_norm is None) == (pn_input in ("fingerprint", "branch"))
    assert (model.spectral is None) == (pn_input != "branch")
    assert model.image_stats is None  # off unless asked for
    from gmparse.data_pipeline.schema import RED116

    Parser(model.eval(), RED116).save(tmp_path)
    again = Parser.load(tmp_path)
    assert again.config.pn_input == pn_input
    with torch.no_grad():
        torch.testing.assert_close(again.model(x)["continuous"], model(x)["continuous"])


def test_log_spectrum_sees_a_checkerboard_and_bad_pn_input() -> None:
    from gmparse.models.config import ModelConfig
    from gmparse.models.parser import ParsingModel, log_spectrum

    board = torch.zeros(1, 3, 8, 8)
    board[..., ::2, ::2] = 1.0
    board[..., 1::2, 1::2] = 1.0
    spec = log_spectrum(board - board.mean())
    assert spec[0, 0, 0, 0] > 1.0 and spec[0, 0, 4, 4] < 1e-4  # energy at Nyquist (corner), none at DC (centre)
    with pytest.raises(ValueError, match="pn_input"):
        ParsingModel(ModelConfig(pn_input="pixels"))


def test_image_stats_branch_reads_value_distribution_and_roundtrips(tmp_path: Path) -> None:
    from dataclasses import replace

    from gmparse.data_pipeline import preprocess
    from gmparse.data_pipeline.schema import RED116
    from gmparse.models.config import ModelConfig
    from gmparse.models.parser import Parser, ParsingModel

    model = ParsingModel(replace(ModelConfig.preset("smoke"), pn_input="branch", image_stats=True)).eval()
    saturated = np.zeros((1, 32, 32, 3), np.uint8)
    saturated[:, :16] = 255  # half black, half white: what a saturating Tanh output looks like
    mid = np.full((1, 32, 32, 3), 128, np.uint8)
    f = model.image_stats.features(torch.from_numpy(preprocess.normalize(np.concatenate([saturated, mid]))))
    assert f.shape == (2, 3 * (16 + 4))
    hist = f[:, :16]  # channel 0's histogram: shares of pixels per value bin
    torch.testing.assert_close(hist.sum(1), torch.ones(2))
    assert hist[0, 0] == pytest.approx(0.5) and hist[0, 15] == pytest.approx(0.5) and hist[1, 8] == pytest.approx(1.0)
    at0, at255 = f[0, 18], f[0, 19]  # per channel [16 bins, mean, std, share at 0, share at 255]
    assert at0 == pytest.approx(0.5) and at255 == pytest.approx(0.5)
    Parser(model, RED116).save(tmp_path)
    again = Parser.load(tmp_path)
    assert again.config.image_stats and again.model.image_stats is not None
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again.model(x)["loss_prob"], model(x)["loss_prob"])


def test_spatial_branch_sees_where_a_pattern_sits_and_roundtrips(tmp_path: Path) -> None:
    from dataclasses import replace

    from gmparse.data_pipeline.schema import RED116
    from gmparse.models.config import ModelConfig
    from gmparse.models.parser import Parser, ParsingModel
    from gmparse.models.pn import SpatialBranch

    torch.manual_seed(0)
    branch = SpatialBranch(8, 16, channels=1).eval()
    a = torch.zeros(1, 1, 8, 8)
    a[..., 0, 0] = 1.0  # a corner trace, as a generator's padding leaves
    b = torch.roll(a, shifts=(4, 4), dims=(-2, -1))  # the same trace elsewhere: same energy, same spectrum magnitude
    torch.testing.assert_close(torch.fft.fft2(a).abs(), torch.fft.fft2(b).abs())
    assert not torch.allclose(branch(a), branch(b))  # a global pool or a magnitude spectrum could not tell them apart
    with pytest.raises(ValueError, match="spatial branch built for 8px"):
        branch(torch.zeros(1, 1, 16, 16))
    model = ParsingModel(replace(ModelConfig.preset("smoke"), pn_input="branch", spatial_branch=True)).eval()
    assert ParsingModel(ModelConfig.preset("smoke")).spatial is None  # off unless asked for
    x = torch.randn(3, 3, 32, 32)
    Parser(model, RED116).save(tmp_path)
    again = Parser.load(tmp_path)
    assert again.config.spatial_branch and again.model.spatial is not None
    with torch.no_grad():
        torch.testing.assert_close(again.model(x)["continuous"], model(x)["continuous"])


def test_predict_fitted_averages_native_tiles() -> None:
    from gmparse.data_pipeline.schema import RED116
    from gmparse.models.config import ModelConfig
    from gmparse.models.parser import Parser, ParsingModel

    parser = Parser(ParsingModel(ModelConfig.preset("smoke")).eval(), RED116)
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # 4 tiles of the 32 px model
    small = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pred = parser.predict_fitted([big, small], "tile")
    tiles = np.stack([big[:32, :32], big[:32, 32:], big[32:, :32], big[32:, 32:]])
    np.testing.assert_allclose(pred.continuous[0], parser.predict_arrays(tiles).continuous.mean(0), atol=1e-6)
    np.testing.assert_allclose(pred.continuous[1], parser.predict_arrays(small[None]).continuous[0], atol=1e-6)
    resized = parser.predict_fitted([big], "resize")  # an untrained model: small but real differences
    assert np.abs(resized.continuous[0] - pred.continuous[0]).max() > 1e-5


def test_weight_ema_averages_steps_and_loads_into_a_fresh_model() -> None:
    from gmparse.models.config import ModelConfig
    from gmparse.models.constraints import ConstraintWeights
    from gmparse.models.engine import averaged_weights, train_one_epoch, weight_ema
    from gmparse.models.losses import targets_to_tensors
    from gmparse.models.parser import ParsingModel

    assert weight_ema(torch.nn.Linear(2, 2), 0.0) is None  # off: the paper's setting
    with pytest.raises(ValueError, match="decay"):
        weight_ema(torch.nn.Linear(2, 2), 1.0)
    torch.manual_seed(0)
    cfg = ModelConfig.preset("smoke")
    model = ParsingModel(cfg)
    ema = weight_ema(model, 0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = []
    for seed in range(3):
        b = targets_to_tensors(_targets(4, seed), np.arange(4))
        b["image"] = torch.randn(4, 3, 32, 32)
        batches.append(b)
    w = model.fen.body[0].weight
    seen = []
    for b in batches:  # one step each, recording the raw weights after it
        train_one_epoch(model, opt, [b], ConstraintWeights(), ema=ema)
        seen.append(w.detach().clone())
    # the first update copies, then avg <- 0.5 * avg + 0.5 * new
    expect = 0.5 * (0.5 * seen[0] + 0.5 * seen[1]) + 0.5 * seen[2]
    state = ema.state_dict()
    assert int(state["n_averaged"]) == 3
    fresh = ParsingModel(cfg)
    fresh.load_state_dict(averaged_weights(state))  # strict: every key of the model, nothing else
    torch.testing.assert_close(fresh.fen.body[0].weight, expect)
    assert not torch.allclose(fresh.fen.body[0].weight, w)


def test_model_input_normalizes_uint8_exactly_as_numpy_and_passes_floats() -> None:
    from gmparse.data_pipeline.preprocess import normalize
    from gmparse.models.inputs import model_input

    u8 = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    x = model_input(torch.from_numpy(u8))
    assert x.shape == (5, 3, 8, 8) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)  # the layout the training loop puts models in
    assert np.array_equal(x.numpy(), normalize(u8))  # the same values as every numpy consumer
    f = torch.randn(2, 3, 8, 8)
    assert model_input(f) is f
    with pytest.raises(ValueError, match="uint8"):
        model_input(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))  # channels first: not what Ray Data delivers


def test_random_hflip_mirrors_a_seeded_half_and_leaves_the_input_alone() -> None:
    from gmparse.models.inputs import model_input, random_hflip

    x = model_input(torch.from_numpy(np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)))
    before = x.clone()
    y = random_hflip(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, before)  # a new tensor: a cached batch is never mirrored for good
    assert y.is_contiguous(memory_format=torch.channels_last)
    flipped = torch.tensor([torch.equal(y[i], x[i].flip(2)) for i in range(len(x))])
    kept = torch.tensor([torch.equal(y[i], x[i]) for i in range(len(x))])
    assert bool((flipped ^ kept).all())  # each image either mirrored left-right or untouched
    assert 16 < int(flipped.sum()) < 48  # about half
    again = random_hflip(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, y)  # the same seed mirrors the same images
    assert torch.equal(random_hflip(x, p=0.0), x) and torch.equal(random_hflip(x, p=1.0), x.flip(3))


def test_bf16_autocast_step_trains_the_default_model() -> None:
    """The GPU step's precision (bf16 autocast around forward + loss), run on the CPU: every part
    of the default model (FFTs of the constraints and the spectral branch included) must accept
    it, and the loss must stay close to full precision's on the same weights and batch."""
    import copy

    from gmparse.models.constraints import ConstraintWeights
    from gmparse.models.engine import train_one_epoch
    from gmparse.models.losses import targets_to_tensors
    from gmparse.models.parser import ParsingModel
    from gmparse.workflows.lib.job_config import job_config

    torch.manual_seed(0)
    model = ParsingModel(job_config("default").model)
    b = targets_to_tensors(_targets(8, 0), np.arange(8))
    b["image"] = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))
    losses = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=0.0)  # no update: the same weights for both
        losses[name] = train_one_epoch(m, opt, [b], ConstraintWeights(), amp_dtype=dtype)["total"]
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad)
    assert np.isfinite(losses["bf16"]) and abs(losses["bf16"] - losses["fp32"]) < 0.05 * abs(losses["fp32"])


def test_ensemble_members_trained_in_threads_take_the_sequential_steps() -> None:
    """The CPU ensemble's members train side by side in threads (``engine.member_threads``): the
    same weights and logged losses as one member after the other, and the caller's thread count back."""
    import copy

    from gmparse.models.constraints import ConstraintWeights
    from gmparse.models.engine import member_threads, train_one_epoch
    from gmparse.models.losses import targets_to_tensors
    from gmparse.models.parser import ParsingModel
    from gmparse.workflows.lib.job_config import job_config

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        model = ParsingModel(job_config("default").model)  # two members
        threads = member_threads(model, "cpu")
        assert threads is not None and threads.pool._max_workers == 2
        assert threads.pool.submit(torch.get_num_threads).result() == 1  # a thread each ...
        assert torch.get_num_threads() == 2  # ... and this thread's count untouched
        threads.close()
        assert member_threads(model.members[0], "cpu") is None  # one network: nothing to split
        assert member_threads(torch.nn.parallel.DistributedDataParallel.__new__(
            torch.nn.parallel.DistributedDataParallel), "cpu") is None  # DDP: members would sync twice
        batches = []
        for seed in range(3):
            b = targets_to_tensors(_targets(8, seed), np.arange(8))
            b["image"] = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))
            batches.append(b)
        runs = {}
        for parallel in (False, True):
            m = copy.deepcopy(model)
            opt = torch.optim.SGD(m.parameters(), lr=0.0)  # the same weights at every step: gradients comparable
            log = train_one_epoch(m, opt, batches, ConstraintWeights(), parallel_members=parallel)
            runs[parallel] = (m, log)
            assert torch.get_num_threads() == 2
        (seq, seq_log), (par, par_log) = runs[False], runs[True]
        grads = [(p.grad, q.grad) for p, q in zip(seq.parameters(), par.parameters())]  # of the last batch
        assert all(g is not None and bool(g.abs().sum() > 0) for _, g in grads)  # every parameter of both members
        for g_seq, g_par in grads:
            torch.testing.assert_close(g_par, g_seq, rtol=1e-4, atol=1e-4 * float(g_seq.abs().max()))
        for p, q in zip(seq.state_dict().values(), par.state_dict().values()):  # BN's running statistics
            torch.testing.assert_close(q, p)
        assert seq_log.keys() == par_log.keys()
        for k in seq_log:
            if k not in ("images_per_s",):
                assert par_log[k] == pytest.approx(seq_log[k], rel=1e-4, abs=1e-6), k
    finally:
        torch.set_num_threads(before)


def test_ensemble_averages_members_trains_each_and_roundtrips(tmp_path: Path) -> None:
    """``ensemble=K``: K networks from their own initializations; the prediction is their average
    (probabilities, not logits), each member gets its own loss (the total is their sum) and
    gradients, and the whole ensemble saves and loads as one parser."""
    from dataclasses import replace

    from gmparse.models.predictions import Predictions

    cfg = replace(SMOKE, ensemble=3, pn_input="branch", image_stats=True)
    torch.manual_seed(0)
    model = ParsingModel(cfg).eval()
    assert len(model.members) == 3 and all(m.config.ensemble == 1 for m in model.members)
    w = [m.fen.body[0].weight for m in model.members]
    assert not torch.equal(w[0], w[1])  # their own initializations
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        members = [Predictions.from_outputs(m(x)) for m in model.members]
    pred = Predictions.from_outputs(out)
    np.testing.assert_allclose(pred.continuous, np.mean([p.continuous for p in members], axis=0), rtol=1e-5)
    for j in range(len(NUM_CLASSES)):
        np.testing.assert_allclose(pred.discrete_probs[j], np.mean([p.discrete_probs[j] for p in members], axis=0),
                                   rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pred.loss_prob, np.mean([p.loss_prob for p in members], axis=0), rtol=1e-5)
    torch.testing.assert_close(out["fingerprint"], model.members[0](x)["fingerprint"])
    torch.testing.assert_close(model.fingerprint(x), out["fingerprint"])

    model.train()
    targets = targets_to_tensors(_targets(5))
    total, log = compute_loss(model(x), targets)
    total.backward()
    assert _grads_ok(model.members[0]) and _grads_ok(model.members[2])
    assert set(log) >= {"total", "parsing", "discrete"}
    model.eval()  # no dropout: the member losses are exact
    with torch.no_grad():
        total_eval, log_eval = compute_loss(model(x), targets)
        parts = [compute_loss(m(x), targets) for m in model.members]
    torch.testing.assert_close(total_eval, sum(t for t, _ in parts))
    assert log_eval["total"] == pytest.approx(np.mean([lg["total"] for _, lg in parts]), rel=1e-5)

    Parser(model, RED116).save(tmp_path)
    again = Parser.load(tmp_path)
    assert again.config.ensemble == 3
    with torch.no_grad():
        torch.testing.assert_close(again.model(x)["loss_prob"], model(x)["loss_prob"])
    with pytest.raises(ValueError, match="ensemble"):
        ParsingModel(replace(SMOKE, ensemble=0))


def test_package_names_load_lazily_and_match_all():
    """``gmparse.models`` exports every name of ``__all__`` (loaded on first use), and importing the
    package or its config module pulls in no torch (entry points' --help stays fast)."""
    import subprocess
    import sys

    from gmparse import models as pkg

    assert set(pkg.__all__) == set(pkg._WHERE)
    assert all(getattr(pkg, n) is not None for n in pkg.__all__)
    code = "import sys, gmparse.models, gmparse.models.config; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
