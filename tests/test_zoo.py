"""The GM zoo: measured labels, covering spec sampler, one GM per family, quality gate."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torch import nn

from gmparse.data_pipeline.schema import DISCRETE, DISCRETE_NAMES, LOSS_TYPES, GMLabels
from gmparse.data_pipeline.zoo import (
    MIN_COVERING_N,
    ZOO_FAMILIES,
    ZOO_PRESETS,
    GMSpec,
    QualityReference,
    ZooTrainConfig,
    gate_figures,
    gate_passes,
    make_gm,
    measure_architecture,
    sample_grid_png,
    sample_specs,
)
from gmparse.data_pipeline.zoo.backbone import ArchSpec, Backbone
from gmparse.data_pipeline.zoo.layers import AdaIN, Block

S = 16


def cls(name: str, value: str) -> int:
    return DISCRETE[name].index(value)


def real_crops(size: int = S, n: int = 96, seed: int = 0) -> np.ndarray:
    """Random crops of skimage's sample photos, resized to ``size`` (no downloads)."""
    rng = np.random.default_rng(seed)
    photos = [data.astronaut(), data.coffee(), data.chelsea()]
    out = []
    for i in range(n):
        im = photos[i % len(photos)]
        side = int(rng.integers(size, 4 * size))
        y, x = rng.integers(0, im.shape[0] - side), rng.integers(0, im.shape[1] - side)
        crop = Image.fromarray(im[y : y + side, x : x + side]).resize((size, size), Image.Resampling.BICUBIC)
        out.append(np.asarray(crop))
    return np.stack(out)


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return real_crops()


# --- introspection on hand-built modules ------------------------------------------------------
def test_counts_of_a_plain_sequential() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 4, 1),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 10),
        nn.Sigmoid(),
    )
    lab = measure_architecture(net, {"cross_entropy"})
    c = lab.continuous
    assert (c["num_conv_layers"], c["num_fc_layers"], c["num_pool_layers"], c["num_norm_layers"]) == (3, 1, 1, 1)
    assert c["num_layers"] == 4
    assert c["num_filters"] == 8 + 16 + 4
    assert c["num_blocks"] == 0 and c["layers_per_block"] == 0
    expected_params = (3 * 8 * 9 + 8) + 16 + (8 * 16 * 9 + 16) + (16 * 4 + 4) + (64 * 10 + 10)
    assert c["num_params"] == expected_params
    d = lab.discrete
    assert d["norm_type"] == cls("norm_type", "batch")
    assert d["last_layer_nonlinearity"] == cls("last_layer_nonlinearity", "sigmoid")
    assert d["last_block_nonlinearity"] == cls("last_block_nonlinearity", "leaky_relu")  # last hidden act
    assert d["upsampling"] == cls("upsampling", "nearest")  # no up-sampling -> class 0
    assert d["skip_connection"] == cls("skip_connection", "no")
    assert d["downsampling"] == cls("downsampling", "yes")
    assert lab.loss_types == {"cross_entropy"}


def test_counts_with_blocks_adain_and_transposed_conv() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.b1 = Block(8, 8, layers=3, norm="adaptive_instance", act="relu", style_dim=4, residual=True)
            self.b2 = Block(8, 16, layers=2, norm="none", act="relu", style_dim=4, residual=True)
            self.b2.out_act = nn.Tanh()
            self.up = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
            self.out = nn.Sequential(nn.Conv2d(8, 3, 3, padding=1), nn.ReLU())

    lab = measure_architecture(Net(), set())
    c, d = lab.continuous, lab.discrete
    assert c["num_blocks"] == 2
    assert c["layers_per_block"] == 3  # b2 has 2 convs + a 1x1 skip projection = 3 too
    assert c["num_conv_layers"] == 3 + 3 + 1 + 1
    assert c["num_fc_layers"] == 3  # one style FC per AdaIN
    assert c["num_norm_layers"] == 3
    assert d["norm_type"] == cls("norm_type", "adaptive_instance")
    assert d["last_block_nonlinearity"] == cls("last_block_nonlinearity", "tanh")
    assert d["last_layer_nonlinearity"] == cls("last_layer_nonlinearity", "relu")
    assert d["upsampling"] == cls("upsampling", "transposed_conv")
    assert d["skip_connection"] == cls("skip_connection", "yes")
    assert d["downsampling"] == cls("downsampling", "no")


def test_measure_rejects_a_module_without_activation() -> None:
    with pytest.raises(ValueError):
        measure_architecture(nn.Conv2d(3, 3, 3), set())


@pytest.mark.parametrize("mode", ["latent", "image"])
@pytest.mark.parametrize("norm", DISCRETE["norm_type"])
def test_backbone_labels_follow_its_knobs(mode: str, norm: str) -> None:
    arch = ArchSpec(
        width=8, fc_layers=2, mid_blocks=2, layers_per_block=3, norm=norm, block_act="sigmoid",
        last_act="leaky_relu", upsampling="transposed_conv", skip=True, downsampling=True, down_stages=2, pool="avg",
    )  # fmt: skip
    net = Backbone(arch, 32, mode=mode, cond_dim=6)
    x = torch.randn(2, arch.z_dim) if mode == "latent" else torch.randn(2, 3, 32, 32)
    assert net(x, torch.randn(2, 6)).shape == (2, 3, 32, 32)
    lab = measure_architecture(net, set()).discrete_names()
    assert lab == {
        "norm_type": norm, "last_layer_nonlinearity": "leaky_relu", "last_block_nonlinearity": "sigmoid",
        "upsampling": "transposed_conv", "skip_connection": "yes", "downsampling": "yes",
    }  # fmt: skip
    c = measure_architecture(net, set()).continuous
    assert c["num_blocks"] == 2 and c["layers_per_block"] == 3 and c["num_pool_layers"] == 2
    assert c["num_params"] == sum(p.numel() for p in net.parameters())
    adains = sum(isinstance(m, AdaIN) for m in net.modules())
    assert c["num_fc_layers"] == 2 + adains


# --- spec sampling --------------------------------------------------------------------------------
def test_specs_cover_every_loss_type_and_class() -> None:
    for seed in range(5):
        specs = sample_specs(MIN_COVERING_N, seed, 32)
        assert set().union(*(s.loss_types for s in specs)) == set(LOSS_TYPES)
        assert {s.family for s in specs} == set(ZOO_FAMILIES)
        for name, values in DISCRETE.items():
            field = {
                "norm_type": lambda a: a.norm,
                "last_layer_nonlinearity": lambda a: a.last_act,
                "last_block_nonlinearity": lambda a: a.block_act,
                "upsampling": lambda a: a.upsampling,
                "skip_connection": lambda a: "yes" if a.skip else "no",
                "downsampling": lambda a: "yes" if a.downsampling else "no",
            }[name]
            assert {field(s.arch) for s in specs} == set(values), (seed, name)


def test_specs_are_deterministic_and_round_trip() -> None:
    a, b, c = sample_specs(20, 7, 16), sample_specs(20, 7, 16), sample_specs(20, 8, 16)
    assert [s.to_json() for s in a] == [s.to_json() for s in b]
    assert [s.to_json() for s in a] != [s.to_json() for s in c]
    assert len({s.gm_id for s in a}) == 20
    for s in a:
        assert GMSpec.from_json(s.to_json()) == s


def test_measured_labels_of_built_specs_match_the_spec() -> None:
    """Every sampled spec builds, and what is measured is what was asked for."""
    from gmparse.data_pipeline.zoo.families import build_family

    for spec in sample_specs(MIN_COVERING_N, 3, S):
        net = build_family(spec, ZOO_PRESETS["smoke"]).net
        got = measure_architecture(net, spec.loss_types).discrete_names()
        a = spec.arch
        assert got == {
            "norm_type": a.norm, "last_layer_nonlinearity": a.last_act, "last_block_nonlinearity": a.block_act,
            "upsampling": a.upsampling, "skip_connection": "yes" if a.skip else "no",
            "downsampling": "yes" if a.downsampling else "no",
        }, spec.gm_id  # fmt: skip


def test_tied_hidden_activation_changes_only_the_hidden_act_and_keeps_the_labels() -> None:
    """--hidden-act tied: a ReLU / LeakyReLU last block makes every hidden layer's activation; the
    same draws otherwise, so the same GMs but for that activation; the measured labels stay the spec's."""
    from gmparse.data_pipeline.zoo.families import build_family
    from gmparse.data_pipeline.zoo.layers import HIDDEN_ACTS

    free, tied = sample_specs(MIN_COVERING_N, 3, S), sample_specs(MIN_COVERING_N, 3, S, hidden_act="tied")
    changed = 0
    for a, b in zip(free, tied, strict=True):
        assert replace(a.arch, act=b.arch.act) == b.arch and (a.gm_id, a.seed) == (b.gm_id, b.seed)
        if a.arch.block_act in HIDDEN_ACTS:
            assert b.arch.act == a.arch.block_act  # one activation throughout, as real GM code
        else:
            assert b.arch.act == a.arch.act  # Tanh / Sigmoid last blocks keep the drawn hidden activation
        changed += b.arch.act != a.arch.act
        net = build_family(b, ZOO_PRESETS["smoke"]).net
        assert measure_architecture(net, b.loss_types).discrete_names()["last_block_nonlinearity"] == b.arch.block_act
    assert changed > 0  # the independent draw did differ somewhere
    with pytest.raises(ValueError, match="hidden_act"):
        sample_specs(16, 0, S, hidden_act="shared")


# --- one GM per family -------------------------------------------------------------------------------
TINY = ZooTrainConfig(steps=6, batch_size=8, retry_steps=2, max_retries=0, max_rebuilds=0, gate_images=16,
                      diffusion_sample_steps=3)  # fmt: skip


def _spec(family: str, losses: set[str], **arch: object) -> GMSpec:
    base = dict(width=8, fc_layers=1, fc_hidden=16, mid_blocks=1, layers_per_block=2, z_dim=8)
    base.update(arch)
    opts = {"color_matrix": np.eye(3).tolist(), "gamma": 1.2, "filter": "blur"} if family == "autoencoder" else {}
    return GMSpec(f"{family}-test", family, frozenset(losses), 123, S, ArchSpec(**base), opts)  # type: ignore[arg-type]


FAMILY_CASES = [
    _spec("gan", {"hinge"}, norm="instance", upsampling="transposed_conv", last_act="tanh"),
    _spec("gan", {"wasserstein"}, norm="batch", skip=True, fc_layers=0),
    _spec("gan", {"mmd"}, norm="adaptive_instance", downsampling=True, pool="max", last_act="sigmoid"),
    _spec("vae", {"kl", "l1"}, norm="batch", block_act="tanh"),
    _spec("autoencoder", {"l2", "adversarial"}, norm="instance", downsampling=True, skip=True),
    _spec("diffusion", {"mse"}, norm="adaptive_instance", downsampling=True, upsampling="transposed_conv"),
    _spec("autoregressive", {"cross_entropy"}, norm="none", last_act="relu", block_act="leaky_relu"),
]


@pytest.mark.parametrize("spec", FAMILY_CASES, ids=lambda s: "-".join([s.family, *sorted(s.loss_types)]))
def test_make_gm_per_family(spec: GMSpec, crops: np.ndarray) -> None:
    r = make_gm(spec, crops, n_images=5, cfg=TINY)
    assert r.images.shape == (5, S, S, 3) and r.images.dtype == np.uint8
    assert isinstance(r.labels, GMLabels)
    assert r.labels.loss_types == spec.loss_types
    a = spec.arch
    assert r.labels.discrete["norm_type"] == cls("norm_type", a.norm)
    assert r.labels.discrete["last_layer_nonlinearity"] == cls("last_layer_nonlinearity", a.last_act)
    assert r.labels.discrete["skip_connection"] == cls("skip_connection", "yes" if a.skip else "no")
    assert r.labels.discrete["downsampling"] == cls("downsampling", "yes" if a.downsampling else "no")
    assert r.labels.continuous["num_params"] > 0 and r.labels.continuous["num_blocks"] >= 1
    assert set(r.quality) >= {"pixel_std", "diversity_ratio", "dist_real_trained", "dist_real_untrained", "improvement"}
    assert r.attempts == 1 and r.steps == TINY.family_steps(spec.family) and isinstance(r.passed, bool)


def test_make_gm_is_deterministic(crops: np.ndarray) -> None:
    spec = FAMILY_CASES[0]
    a, b = make_gm(spec, crops, 4, TINY), make_gm(spec, crops, 4, TINY)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.quality == b.quality


def test_failing_gate_retries_then_rebuilds(crops: np.ndarray) -> None:
    impossible = TINY.with_(min_improvement=1e9, max_retries=1, max_rebuilds=1, retry_steps=1)
    r = make_gm(FAMILY_CASES[0], crops, 2, impossible)
    steps = impossible.family_steps("gan") + impossible.family_steps("gan", retry=True)  # the second build's
    assert not r.passed and r.attempts == 4 and r.steps == steps
    assert r.build_seed != FAMILY_CASES[0].seed


def test_make_gm_rejects_wrong_crop_size(crops: np.ndarray) -> None:
    with pytest.raises(ValueError):
        make_gm(FAMILY_CASES[0], real_crops(32, n=4), 2, TINY)


# --- quality gate -------------------------------------------------------------------------------------
def test_gate_on_crafted_inputs(crops: np.ndarray) -> None:
    cfg = ZOO_PRESETS["default"].with_(max_swd=None)  # the realism threshold: tests/test_realism.py
    assert not gate_passes(gate_figures(crops[48:], QualityReference(crops[:48]), crops[48:]) | {"improvement": 9.0},
                           ZOO_PRESETS["default"])  # a preset with a realism threshold needs the figure
    ref = QualityReference(crops[:48])
    noise = np.random.default_rng(0).integers(0, 256, crops[48:].shape, dtype=np.uint8)
    good = gate_figures(crops[48:], ref, untrained=noise)
    assert gate_passes(good, cfg), good
    assert good["diversity_ratio"] > 0.7 and good["improvement"] > 5
    same = gate_figures(crops[:48], ref, untrained=noise)
    assert same["dist_real_trained"] == pytest.approx(0.0, abs=1e-9) and gate_passes(same, cfg)

    constant = np.full_like(crops[48:], 128)
    figs = gate_figures(constant, ref, untrained=noise)
    assert figs["pixel_std"] == 0 and not gate_passes(figs, cfg)

    identical = np.repeat(crops[:1], 48, axis=0)
    figs = gate_figures(identical, ref, untrained=noise)
    assert figs["diversity_ratio"] == pytest.approx(0.0, abs=1e-9) and not gate_passes(figs, cfg)

    figs = gate_figures(noise, ref, untrained=noise)  # no better than untrained
    assert figs["improvement"] == pytest.approx(1.0) and not gate_passes(figs, cfg)


def test_sample_grid_png(crops: np.ndarray) -> None:
    png = sample_grid_png(crops[:8], crops[8:16])
    img = np.asarray(Image.open(io.BytesIO(png)))
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[1] > 2 * img.shape[0] - 10


def test_presets_exist() -> None:
    assert {"smoke", "default", "large"} <= set(ZOO_PRESETS)
    assert ZOO_PRESETS["smoke"].steps < ZOO_PRESETS["default"].steps < ZOO_PRESETS["large"].steps
    assert len(DISCRETE_NAMES) == 6


def test_smoke_preset_passes_most_fixed_specs(crops: np.ndarray) -> None:
    """A regression guard on few-step training: the smoke preset's GMs (one per family and
    three GAN losses, 16x16) mostly clear the gate, each within the preset's time cap."""
    cfg = ZOO_PRESETS["smoke"]
    specs = sample_specs(MIN_COVERING_N, 0, S)
    picked = [specs[i] for i in (0, 2, 3, 4, 5, 7, 10)]  # gan x3 losses, diffusion, AR, AE, VAE
    results = [make_gm(s, crops, 4, cfg) for s in picked]
    passed = [r.spec.gm_id for r in results if r.passed]
    assert len(passed) >= len(picked) - 1, [(r.spec.gm_id, r.passed, r.quality) for r in results]
    for r in results:
        if r.passed:
            assert r.quality["improvement"] >= cfg.min_improvement


def test_the_cpu_guard_fails_loudly_and_never_decides_a_gm(crops: np.ndarray) -> None:
    """Past ``max_seconds`` a GM raises (it is not cut short and kept, nor rejected)."""
    from gmparse.data_pipeline.zoo import GMBudgetExceeded

    capped = TINY.with_(min_improvement=1e9, max_retries=5, max_rebuilds=3, retry_steps=50, max_seconds=1e-3)
    with pytest.raises(GMBudgetExceeded, match="CPU-seconds"):
        make_gm(FAMILY_CASES[0], crops, 2, capped)


def test_a_slowed_worker_makes_the_same_gms(crops: np.ndarray, monkeypatch) -> None:
    """Budgets are steps: a GM trained on a CPU made 50x slower (each step busy-waits, as a slow
    core would) has the same images, gate verdict and labels. Under the old wall-time cap (8 s on
    the smoke preset) these GMs would have stopped early on such a core."""
    import time as _time

    cfg = ZOO_PRESETS["smoke"].with_(max_seconds=None)
    picked = [sample_specs(MIN_COVERING_N, 0, S)[i] for i in (0, 3)]  # a GAN and an autoregressive GM
    fast = [make_gm(s, crops, 8, cfg) for s in picked]
    calls = {"n": 0}

    def slow(original):
        def step(self, real):
            t = _time.thread_time()
            original(self, real)
            spent = _time.thread_time() - t
            while _time.thread_time() - t < 50 * spent:  # burn CPU time: a 50x slower core
                pass
            calls["n"] += 1
        return step

    from gmparse.data_pipeline.zoo.families import FAMILY_REGISTRY

    for fam_cls in set(FAMILY_REGISTRY.values()):
        if "train_step" in vars(fam_cls):
            monkeypatch.setattr(fam_cls, "train_step", slow(vars(fam_cls)["train_step"]))
    slowed = [make_gm(s, crops, 8, cfg) for s in picked]
    assert calls["n"] == sum(r.steps for r in slowed) > 0
    assert sum(r.train_seconds for r in slowed) > 5 * sum(r.train_seconds for r in fast)
    for a, b in zip(fast, slowed):
        assert np.array_equal(a.images, b.images) and a.passed == b.passed and a.steps == b.steps
        assert a.labels == b.labels and a.attempts == b.attempts


# --- implementations: the same knobs written in other code styles -------------------------------
ALL_IMPLS = ("backbone", "dcgan", "resnet", "stylegan", "unet")


def test_implementations_build_and_measure_as_asked() -> None:
    """GANs, VAEs, autoencoders and diffusion denoisers written DCGAN-, SNGAN/BigGAN-,
    StyleGAN- or U-Net-style: every spec builds, runs, and measures as asked; each family gets
    every implementation it can be written in."""
    from gmparse.data_pipeline.zoo.families import build_family
    from gmparse.data_pipeline.zoo.generators import (
        IMPLEMENTATIONS,
        ConcatSkip,
        DCGANGenerator,
        ModulatedConv2d,
        ResidualUpBlock,
        ResNetGenerator,
        StyleBlock,
        StyleGenerator,
        UNet,
    )

    specs = sample_specs(48, 0, 32, ALL_IMPLS)
    for family in ("gan", "vae", "autoencoder", "diffusion", "autoregressive"):
        assert {s.arch.implementation for s in specs if s.family == family} == set(
            IMPLEMENTATIONS.get(family, ("backbone",))), family
    for spec in specs:
        net = build_family(spec, ZOO_PRESETS["smoke"]).net
        a = spec.arch
        got = measure_architecture(net, spec.loss_types)
        assert got.discrete_names() == {
            "norm_type": a.norm, "last_layer_nonlinearity": a.last_act, "last_block_nonlinearity": a.block_act,
            "upsampling": a.upsampling, "skip_connection": "yes" if a.skip else "no",
            "downsampling": "yes" if a.downsampling else "no",
        }, (spec.gm_id, a.implementation)  # fmt: skip
        if a.implementation == "dcgan":
            assert isinstance(net, DCGANGenerator) and not any(isinstance(m, Block) for m in net.modules())
        if a.implementation == "resnet":
            blocks = [m for m in net.modules() if isinstance(m, ResidualUpBlock)]
            assert isinstance(net, ResNetGenerator) and len(blocks) == 3  # 4 -> 8 -> 16 -> 32
            assert got.continuous["num_blocks"] == 3
        if a.implementation == "stylegan":
            assert isinstance(net, StyleGenerator) and got.continuous["num_blocks"] == 3
            assert any(isinstance(m, ModulatedConv2d) for m in net.modules()) == (a.norm == "none")
            assert sum(isinstance(m, StyleBlock) for m in net.modules()) == 3
        if a.implementation == "unet":
            assert isinstance(net, UNet) and sum(isinstance(m, ConcatSkip) for m in net.modules()) == a.down_stages
            out = net(torch.randn(2, 3, 32, 32), torch.randn(2, 6 if spec.family == "autoencoder" else 16))
            assert out.shape == (2, 3, 32, 32)
        if spec.family in ("gan", "vae"):
            assert net(torch.randn(2, a.z_dim)).shape == (2, 3, 32, 32)


def test_modulated_conv_demodulates_and_noise_is_fixed_in_eval() -> None:
    """StyleGAN2's modulated conv: a style that scales every input channel alike changes nothing
    (the filters are demodulated), one that scales them differently does; the noise maps are
    random in training and fixed in eval (deterministic sampling)."""
    from gmparse.data_pipeline.zoo.generators import ModulatedConv2d, NoiseInjection

    conv = ModulatedConv2d(4, 6, 3, w_dim=5)
    x = torch.randn(2, 4, 8, 8)
    conv.style = torch.zeros(2, 5)
    nn.init.zeros_(conv.affine.weight)
    nn.init.constant_(conv.affine.bias, 0.0)  # modulation 1 for every channel
    y1 = conv(x)
    nn.init.constant_(conv.affine.bias, 4.0)  # modulation 5 for every channel
    assert torch.allclose(conv(x), y1, atol=1e-5)
    conv.style = torch.randn(2, 5)
    nn.init.normal_(conv.affine.weight)
    assert not torch.allclose(conv(x), y1, atol=1e-3)
    noise = NoiseInjection(3, 8)
    nn.init.ones_(noise.strength)
    h = torch.zeros(1, 3, 8, 8)
    assert not torch.equal(noise(h), noise(h))
    noise.eval()
    assert torch.equal(noise(h), noise(h))


def test_default_specs_draw_no_implementation() -> None:
    """Collections built before implementations existed keep their specs: same draws, backbone only."""
    a, b = sample_specs(40, 5, 32), sample_specs(40, 5, 32, ("backbone",))
    assert [s.to_json() for s in a] == [s.to_json() for s in b]
    assert {s.arch.implementation for s in a} == {"backbone"}
    old = GMSpec.from_json(a[0].to_json().replace(', "implementation": "backbone"', ""))
    assert old == a[0]  # a spec stored before the field existed reads back as the backbone
    with pytest.raises(ValueError, match="implementations"):
        sample_specs(16, 0, 32, ("dcgan",))
    with pytest.raises(ValueError, match="implementations"):
        sample_specs(16, 0, 32, ("backbone", "stylegan9"))


@pytest.mark.parametrize(("family", "impl"), [("gan", "dcgan"), ("gan", "resnet"), ("gan", "stylegan"),
                                              ("autoencoder", "unet"), ("diffusion", "unet")])
def test_make_gm_with_each_implementation(family: str, impl: str, crops: np.ndarray) -> None:
    spec = next(s for s in sample_specs(48, 0, S, ALL_IMPLS) if s.family == family and s.arch.implementation == impl)
    r = make_gm(spec, crops, n_images=5, cfg=TINY)
    assert r.images.shape == (5, S, S, 3) and r.images.dtype == np.uint8 and r.images.std() > 0
    assert r.labels.discrete_names()["skip_connection"] == ("yes" if impl in ("resnet", "unet") else "no")
    again = make_gm(spec, crops, n_images=5, cfg=TINY)
    assert np.array_equal(r.images, again.images)  # deterministic, noise injection included


# --- GPU builds: every tensor follows the GM to its device -------------------------------------------------
IMPL_CASES = [("gan", "dcgan"), ("gan", "resnet"), ("gan", "stylegan"), ("autoencoder", "unet"), ("diffusion", "unet")]


def _device_cases() -> list[GMSpec]:
    drawn = sample_specs(48, 0, S, ALL_IMPLS)
    return FAMILY_CASES + [next(s for s in drawn if s.family == f and s.arch.implementation == i) for f, i in IMPL_CASES]


@pytest.mark.parametrize("spec", _device_cases(), ids=lambda s: f"{s.family}-{s.arch.implementation}-{min(s.loss_types)}")
def test_every_family_trains_and_samples_on_another_device(spec: GMSpec) -> None:
    """On PyTorch's 'meta' device (shapes only), an op that mixes in a tensor left on the CPU
    raises, as it would on a GPU: what a GPU build (BuildConfig.gpus_per_gm) needs, checked here."""
    from gmparse.data_pipeline.zoo.families import build_family

    torch.manual_seed(0)
    gm = build_family(spec, TINY).to("meta")
    assert gm.device.type == "meta"
    real = torch.zeros(8, 3, S, S, device="meta")
    gm.train_step(real)
    gm.n_steps += 1
    gm.train_step(real)
    out = gm.generate(4, real, torch.Generator().manual_seed(0))
    assert out.device.type == "meta" and tuple(out.shape) == (4, 3, S, S)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("spec", FAMILY_CASES, ids=lambda s: "-".join([s.family, *sorted(s.loss_types)]))
def test_make_gm_on_cuda_measures_the_same_labels(spec: GMSpec, crops: np.ndarray) -> None:
    cpu, gpu = make_gm(spec, crops, 8, TINY), make_gm(spec, crops, 8, TINY, device="cuda")
    assert gpu.images.shape == cpu.images.shape and gpu.images.std() > 0
    assert gpu.labels == cpu.labels and gpu.steps == cpu.steps


# --- the balanced family mix and prefixes (collections that grow) ------------------------------
def test_a_prefix_of_the_specs_is_the_smaller_sequence() -> None:
    for mix in ("random", "balanced"):
        long = sample_specs(120, 3, 32, ALL_IMPLS, "tied", mix)
        for n in (16, 33, 64):
            assert sample_specs(n, 3, 32, ALL_IMPLS, "tied", mix) == long[:n], (mix, n)


def test_the_balanced_mix_holds_every_family_at_its_share_at_every_size() -> None:
    """By design, not by chance: each prefix within one GM of FAMILY_SHARES, every implementation of
    a family within one GM of the others, and (from 40 GMs) every loss type and discrete class."""
    from collections import Counter

    from gmparse.data_pipeline.zoo.generators import IMPLEMENTATIONS
    from gmparse.data_pipeline.zoo.specs import FAMILY_SHARES

    specs = sample_specs(320, 0, 32, ALL_IMPLS, "tied", "balanced")
    for n in range(1, 321):
        counts = Counter(s.family for s in specs[:n])
        assert all(abs(counts[f] - share * n) <= 1 for f, share in FAMILY_SHARES), (n, counts)
    for n in (40, 80, 320):
        impl = Counter((s.family, s.arch.implementation) for s in specs[:n])
        for fam, ways in IMPLEMENTATIONS.items():
            got = [impl[(fam, w)] for w in ways]
            assert max(got) - min(got) <= 1, (n, fam, got)
        assert set().union(*(s.loss_types for s in specs[:n])) == set(LOSS_TYPES), n
        drawn = {"norm_type": {s.arch.norm for s in specs[:n]}, "upsampling": {s.arch.upsampling for s in specs[:n]},
                 "last_layer_nonlinearity": {s.arch.last_act for s in specs[:n]},
                 "last_block_nonlinearity": {s.arch.block_act for s in specs[:n]},
                 "skip_connection": {"yes" if s.arch.skip else "no" for s in specs[:n]},
                 "downsampling": {"yes" if s.arch.downsampling else "no" for s in specs[:n]}}
        for name, values in drawn.items():
            assert values == set(DISCRETE[name]), (n, name, values)


def test_folds_stay_gm_disjoint_and_stratified_at_every_size() -> None:
    import pandas as pd

    from gmparse.data_pipeline.folds import gm_folds

    specs = sample_specs(320, 0, 32, ALL_IMPLS, "tied", "balanced")
    for n in (48, 64, 160, 320):  # from 48 GMs: below, many strata hold fewer GMs than folds
        gms = pd.DataFrame({"gm_id": [s.gm_id for s in specs[:n]], "family": [s.family for s in specs[:n]],
                            "implementation": [s.arch.implementation for s in specs[:n]]})
        folds = gm_folds(gms, 4)
        tests = [set(f.test_gms) for f in folds]
        assert set().union(*tests) == set(gms["gm_id"]) and sum(map(len, tests)) == n  # each GM tested once
        assert all(not set(f.train_gms) & set(f.test_gms) for f in folds)
        strata = gms.assign(s=gms["family"] + "/" + gms["implementation"]).set_index("gm_id")["s"]
        for f in folds:
            got = strata.loc[list(f.test_gms)].value_counts()
            for s, total in strata.value_counts().items():
                assert abs(got.get(s, 0) - total / 4) < 1, (n, s, got.get(s, 0), total)
