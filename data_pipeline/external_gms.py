"""An external test collection: GMs written from their papers, sharing no code with the zoo.

Every zoo GM is built from one backbone (``data_pipeline.zoo.backbone``), so a parser trained
on the zoo may learn that code's habits rather than what an architecture does to images.
These GMs are plain torch modules written from each paper's description of its generator,
trained on the same kind of real crops until their samples pass the realism threshold, and
labelled by the same introspection (``zoo.introspect.measure_architecture``) as the zoo.

* ``dcgan`` - Radford et al. 2016: transposed-conv stack from a 1x1 latent, batch norm and
  ReLU, Tanh output; a strided-conv critic with leaky ReLU; the cross-entropy GAN loss.
* ``lsgan`` - Mao et al. 2017: an FC projection, 3x3 stride-2 transposed convs with batch
  norm and ReLU, Tanh output; the least-squares GAN loss.
* ``sngan`` - Miyato et al. 2018, the "standard CNN" generator: FC projection, 4x4 stride-2
  transposed convs with batch norm and ReLU, a 3x3 conv and Tanh; a spectrally normalized
  critic; the hinge loss.
* ``wgan-gp`` - Gulrajani et al. 2017, their CIFAR generator: FC projection with batch norm,
  2x2 stride-2 transposed convs with batch norm and ReLU, Tanh output; a critic without
  normalization; the Wasserstein loss with gradient penalty.
* ``vae`` - Kingma & Welling 2014 with the usual conv encoder / decoder: FC projection,
  transposed convs with ReLU and no normalization, a Sigmoid output; Gaussian (L2)
  reconstruction plus KL.
* ``mlp-vae`` - Kingma & Welling 2014 as the paper wrote it: an MLP encoder and decoder with
  one tanh hidden layer, a Sigmoid output, no convolution at all; Gaussian (L2) plus KL.

Each is also built at other widths, depths (DCGAN's extra 3x3 layers, as the WGAN authors' code
has them), without normalization (the WGAN paper's DCGAN without batch norm) and with other
papers' losses on the same architecture (as LSGAN and SNGAN compared them): 26 GMs, enough for a
table on them to reach p < 0.01, where six could not go below ~0.0014 and one GM moved accuracy
by 0.17. A variant is still code from its paper, never the zoo's, and is labelled by measuring it.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gmparse.data_pipeline.zoo.config import ZOO_PRESETS

#: the realism threshold of the zoo's default gate (SWD x1e3 of 64 samples to the training crops)
DEFAULT_MAX_SWD: float = ZOO_PRESETS["default"].max_swd  # type: ignore[assignment]


# --- generators, as each paper describes them (scaled to 32 px and to a CPU) --------------------------
def dcgan_generator(nz: int = 100, ngf: int = 32, extra_layers: int = 0, norm: bool = True) -> nn.Module:
    """``extra_layers``: 3x3 stride-1 convs before the output layer, as the WGAN authors' DCGAN code
    (``n_extra_layers``); ``norm=False``: no batch norm, the WGAN paper's "DCGAN without BN"."""
    def bn(c: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(c)] if norm else []

    extra = [m for _ in range(extra_layers) for m in (nn.Conv2d(ngf, ngf, 3, 1, 1, bias=False), *bn(ngf), nn.ReLU(True))]
    return nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), *bn(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), *bn(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), *bn(ngf), nn.ReLU(True), *extra,
        nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh(),
    )  # fmt: skip


def dcgan_critic(ndf: int = 32) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False), nn.Flatten(),
    )  # fmt: skip


class Unflatten(nn.Module):
    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(len(x), *self.shape)


def lsgan_generator(nz: int = 64, ch: int = 128) -> nn.Module:
    def up(cin: int, cout: int) -> list[nn.Module]:
        return [nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1), nn.BatchNorm2d(cout), nn.ReLU(True)]

    return nn.Sequential(
        nn.Linear(nz, ch * 4 * 4), nn.BatchNorm1d(ch * 4 * 4), nn.ReLU(True), Unflatten(ch, 4, 4),
        *up(ch, ch), *up(ch, ch // 2), nn.ConvTranspose2d(ch // 2, 3, 3, 2, 1, output_padding=1), nn.Tanh(),
    )  # fmt: skip


def sngan_generator(nz: int = 128, ch: int = 128) -> nn.Module:
    def up(cin: int, cout: int) -> list[nn.Module]:
        return [nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ReLU(True)]

    return nn.Sequential(
        nn.Linear(nz, ch * 4 * 4), Unflatten(ch, 4, 4), nn.BatchNorm2d(ch), nn.ReLU(True),
        *up(ch, ch // 2), *up(ch // 2, ch // 4), *up(ch // 4, ch // 8), nn.Conv2d(ch // 8, 3, 3, 1, 1), nn.Tanh(),
    )  # fmt: skip


def sngan_critic(ch: int = 32) -> nn.Module:
    sn = nn.utils.parametrizations.spectral_norm
    return nn.Sequential(
        sn(nn.Conv2d(3, ch, 3, 1, 1)), nn.LeakyReLU(0.1), sn(nn.Conv2d(ch, ch, 4, 2, 1)), nn.LeakyReLU(0.1),
        sn(nn.Conv2d(ch, ch * 2, 3, 1, 1)), nn.LeakyReLU(0.1), sn(nn.Conv2d(ch * 2, ch * 2, 4, 2, 1)), nn.LeakyReLU(0.1),
        sn(nn.Conv2d(ch * 2, ch * 4, 3, 1, 1)), nn.LeakyReLU(0.1), sn(nn.Conv2d(ch * 4, ch * 4, 4, 2, 1)),
        nn.LeakyReLU(0.1), nn.Flatten(), sn(nn.Linear(ch * 4 * 4 * 4, 1)),
    )  # fmt: skip


def wgan_gp_generator(nz: int = 128, dim: int = 64) -> nn.Module:
    return nn.Sequential(
        nn.Linear(nz, 4 * 4 * 4 * dim), nn.BatchNorm1d(4 * 4 * 4 * dim), nn.ReLU(True), Unflatten(4 * dim, 4, 4),
        nn.ConvTranspose2d(4 * dim, 2 * dim, 2, stride=2), nn.BatchNorm2d(2 * dim), nn.ReLU(True),
        nn.ConvTranspose2d(2 * dim, dim, 2, stride=2), nn.BatchNorm2d(dim), nn.ReLU(True),
        nn.ConvTranspose2d(dim, 3, 2, stride=2), nn.Tanh(),
    )  # fmt: skip


def wgan_gp_critic(dim: int = 32) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, dim, 3, 2, 1), nn.LeakyReLU(), nn.Conv2d(dim, 2 * dim, 3, 2, 1), nn.LeakyReLU(),
        nn.Conv2d(2 * dim, 4 * dim, 3, 2, 1), nn.LeakyReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4 * dim, 1),
    )  # fmt: skip


def vae_encoder(nz: int = 32, ch: int = 32) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, ch, 4, 2, 1), nn.ReLU(True), nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.ReLU(True),
        nn.Conv2d(ch * 2, ch * 4, 4, 2, 1), nn.ReLU(True), nn.Flatten(), nn.Linear(ch * 4 * 16, 2 * nz),
    )  # fmt: skip


def vae_decoder(nz: int = 32, ch: int = 32) -> nn.Module:
    return nn.Sequential(
        nn.Linear(nz, ch * 4 * 16), nn.ReLU(True), Unflatten(ch * 4, 4, 4),
        nn.ConvTranspose2d(ch * 4, ch * 2, 4, 2, 1), nn.ReLU(True),
        nn.ConvTranspose2d(ch * 2, ch, 4, 2, 1), nn.ReLU(True),
        nn.ConvTranspose2d(ch, 3, 4, 2, 1), nn.Sigmoid(),
    )  # fmt: skip


def mlp_vae_encoder(nz: int = 32, hidden: int = 500) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, hidden), nn.Tanh(), nn.Linear(hidden, 2 * nz))


def mlp_vae_decoder(nz: int = 32, hidden: int = 500) -> nn.Module:
    return nn.Sequential(nn.Linear(nz, hidden), nn.Tanh(), nn.Linear(hidden, 3 * 32 * 32), nn.Sigmoid(),
                         Unflatten(3, 32, 32))


def _weights_init(m: nn.Module) -> None:
    """DCGAN's initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales."""
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


# --- training -----------------------------------------------------------------------------------------
class _GAN:
    def __init__(self, g: nn.Module, d: nn.Module, nz: int, loss: str, lr: float, betas: tuple[float, float],
                 latent_4d: bool = False) -> None:
        self.net, self.d, self.nz, self.loss, self.latent_4d = g, d, nz, loss, latent_4d
        self.opt_g = torch.optim.Adam(g.parameters(), lr, betas=betas)
        self.opt_d = torch.optim.Adam(d.parameters(), lr, betas=betas)

    def z(self, n: int, gen: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.nz, generator=gen)
        return z[..., None, None] if self.latent_4d else z

    def _d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        if self.loss == "adversarial":
            return F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + \
                F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        if self.loss == "least_squares":
            return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean()
        if self.loss == "wasserstein":
            return fake.mean() - real.mean()
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()  # hinge

    def _g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        if self.loss == "adversarial":
            return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
        if self.loss == "least_squares":
            return 0.5 * ((fake - 1) ** 2).mean()
        return -fake.mean()  # hinge, wasserstein

    def _penalty(self, x: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """WGAN-GP's gradient penalty on random interpolates (weight 10, as in the paper)."""
        eps = torch.rand(len(x), 1, 1, 1)
        mix = (eps * x + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.d(mix).sum(), mix, create_graph=True)
        return 10.0 * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()

    def step(self, x: torch.Tensor) -> None:
        fake = self.net(self.z(len(x)))
        self.opt_d.zero_grad(set_to_none=True)
        loss = self._d_loss(self.d(x), self.d(fake.detach()))
        if self.loss == "wasserstein":
            loss = loss + self._penalty(x, fake.detach())
        loss.backward()
        self.opt_d.step()
        self.opt_g.zero_grad(set_to_none=True)
        self._g_loss(self.d(fake)).backward()
        self.opt_g.step()

    def generate(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return self.net(self.z(n, gen))


class _VAE:
    def __init__(self, nz: int = 32, mlp: bool = False, ch: int = 32, hidden: int = 500) -> None:
        self.nz = nz
        self.enc, self.net = ((mlp_vae_encoder(nz, hidden), mlp_vae_decoder(nz, hidden)) if mlp
                              else (vae_encoder(nz, ch), vae_decoder(nz, ch)))
        self.opt = torch.optim.Adam([*self.enc.parameters(), *self.net.parameters()], 1e-3)

    def step(self, x: torch.Tensor) -> None:
        x01 = (x + 1) / 2
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = ((self.net(z) - x01) ** 2).flatten(1).sum(1) / 0.1  # Gaussian likelihood, sigma^2 = 0.05
        kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
        self.opt.zero_grad(set_to_none=True)
        (recon + kl).mean().backward()
        self.opt.step()

    def generate(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return self.net(torch.randn(n, self.nz, generator=gen)) * 2 - 1


@dataclass(frozen=True)
class ExternalGM:
    """One GM of the external collection: how to build it and what it trains with. ``base``: the
    paper architecture it is (or varies: another width, depth, normalization or loss)."""

    gm_id: str
    family: str
    loss_types: tuple[str, ...]
    paper: str
    build: Callable[[], Any]
    base: str = ""


#: each GAN loss's optimizer, as its paper trains it
_GAN_OPTIM = {"adversarial": (2e-4, (0.5, 0.999)), "least_squares": (2e-4, (0.5, 0.999)),
              "hinge": (2e-4, (0.5, 0.999)), "wasserstein": (1e-4, (0.5, 0.9))}


def _gan(g: nn.Module, nz: int, loss: str, latent_4d: bool = False, critic: nn.Module | None = None) -> _GAN:
    """``g`` with its paper's initialization against a critic for ``loss`` (WGAN-GP's has no batch
    norm: the gradient penalty is per sample)."""
    d = critic if critic is not None else (wgan_gp_critic() if loss == "wasserstein" else dcgan_critic())
    g.apply(_weights_init), d.apply(_weights_init)
    lr, betas = _GAN_OPTIM[loss]
    return _GAN(g, d, nz, loss, lr, betas, latent_4d=latent_4d)


def _dcgan(ngf: int = 32, extra_layers: int = 0, norm: bool = True, loss: str = "adversarial") -> _GAN:
    return _gan(dcgan_generator(100, ngf, extra_layers, norm), 100, loss, latent_4d=True)


def _lsgan(ch: int = 128, loss: str = "least_squares") -> _GAN:
    return _gan(lsgan_generator(64, ch), 64, loss)


def _sngan(ch: int = 128, loss: str = "hinge") -> _GAN:
    return _GAN(sngan_generator(128, ch), sngan_critic(), 128, loss, *_GAN_OPTIM[loss])


def _wgan_gp(dim: int = 64, loss: str = "wasserstein") -> _GAN:
    return _GAN(wgan_gp_generator(128, dim), wgan_gp_critic(), 128, loss, *_GAN_OPTIM[loss])


_PAPERS = {
    "ext-dcgan": "Radford et al. 2016 (DCGAN)",
    "ext-lsgan": "Mao et al. 2017 (LSGAN)",
    "ext-sngan": "Miyato et al. 2018 (SNGAN, standard CNN)",
    "ext-wgan-gp": "Gulrajani et al. 2017 (WGAN-GP, CIFAR generator)",
    "ext-vae": "Kingma & Welling 2014 (VAE, conv encoder/decoder)",
    "ext-mlp-vae": "Kingma & Welling 2014 (VAE, MLP as in the paper)",
}
_GAN_LOSS = {"ext-dcgan": "adversarial", "ext-lsgan": "least_squares", "ext-sngan": "hinge",
             "ext-wgan-gp": "wasserstein"}
_BUILDERS: dict[str, Callable[..., Any]] = {"ext-dcgan": _dcgan, "ext-lsgan": _lsgan, "ext-sngan": _sngan,
                                            "ext-wgan-gp": _wgan_gp, "ext-vae": _VAE,
                                            "ext-mlp-vae": functools.partial(_VAE, mlp=True)}
_LOSS_SUFFIX = {"adversarial": "adv", "least_squares": "ls", "hinge": "hinge", "wasserstein": "wgan-gp"}


def _external(base: str, suffix: str = "", what: str = "", **kw: Any) -> ExternalGM:
    """The paper architecture ``base``, or a variant of it (``kw`` to its builder, ``what`` says how)."""
    family = "vae" if base.endswith("vae") else "gan"
    losses = ("kl", "l2") if family == "vae" else (kw.get("loss", _GAN_LOSS[base]),)
    return ExternalGM(f"{base}-{suffix}" if suffix else base, family, losses,
                      _PAPERS[base] + (f"; {what}" if what else ""), functools.partial(_BUILDERS[base], **kw), base)


def _loss_variant(base: str, loss: str) -> ExternalGM:
    return _external(base, _LOSS_SUFFIX[loss], f"trained with the {loss.replace('_', '-')} loss", loss=loss)


#: the six paper architectures as written, then each at other widths, depths, normalizations and
#: losses (26 GMs), so a table on them can reach p < 0.01 and one GM moves accuracy by ~0.04, not 0.17
EXTERNAL_GMS: tuple[ExternalGM, ...] = (
    *(_external(base) for base in _PAPERS),
    _external("ext-dcgan", "w16", "ngf 16", ngf=16),
    _external("ext-dcgan", "w64", "ngf 64", ngf=64),
    _external("ext-dcgan", "x1", "1 extra 3x3 conv layer (the WGAN code's n_extra_layers)", extra_layers=1),
    _external("ext-dcgan", "x2", "2 extra 3x3 conv layers (the WGAN code's n_extra_layers)", extra_layers=2),
    _external("ext-dcgan", "nobn-wgan-gp", "no batch norm, WGAN-GP loss (the WGAN paper's DCGAN without BN)",
              norm=False, loss="wasserstein"),
    _loss_variant("ext-dcgan", "least_squares"),
    _loss_variant("ext-dcgan", "hinge"),
    _external("ext-lsgan", "w32", "32 base channels", ch=32),
    _external("ext-lsgan", "w64", "64 base channels", ch=64),
    _loss_variant("ext-lsgan", "adversarial"),
    _external("ext-sngan", "w64", "64 base channels", ch=64),
    _loss_variant("ext-sngan", "least_squares"),
    _external("ext-wgan-gp", "w32", "DIM 32", dim=32),
    _external("ext-wgan-gp", "w128", "DIM 128", dim=128),
    _loss_variant("ext-wgan-gp", "hinge"),
    _external("ext-vae", "w16", "16 base channels", ch=16),
    _external("ext-vae", "w64", "64 base channels", ch=64),
    _external("ext-vae", "nz64", "a 64-d latent", nz=64),
    _external("ext-mlp-vae", "h256", "256 hidden units", hidden=256),
    _external("ext-mlp-vae", "h1000", "1000 hidden units", hidden=1000),
)


@dataclass(frozen=True)
class ExternalConfig:
    """How the external collection is built (32 px, as the default zoo)."""

    image_size: int = 32
    images_per_gm: int = 256
    real_images: int = 1024
    train_crops: int = 4096
    batch_size: int = 64
    min_steps: int = 1000  # every GM trains this long (passing the threshold early is not enough)
    max_steps: int = 3000
    check_every: int = 250  # steps between realism checks
    max_swd: float = DEFAULT_MAX_SWD
    seed: int = 0

    def key(self) -> str:
        import hashlib
        import json

        d = {**asdict(self), "gms": [g.gm_id for g in EXTERNAL_GMS]}  # another GM list is another collection
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]


def default_external_path(cfg: ExternalConfig | None = None) -> Path:
    """Where ``build_collection.py --external`` builds the external collection, and where the jobs
    that score on it (the wide main job, the scaling curve) look for it."""
    from gmparse.data_pipeline.paths import collections_root

    cfg = cfg or ExternalConfig()
    return collections_root() / f"external-s{cfg.seed}-{cfg.key()}"


@torch.no_grad()
def _sample(model: Any, n: int, seed: int) -> np.ndarray:
    model.net.eval()
    gen = torch.Generator().manual_seed(seed)
    try:
        x = torch.cat([model.generate(min(64, n - i), gen) for i in range(0, n, 64)])
    finally:
        model.net.train()
    return ((x.clamp(-1, 1).permute(0, 2, 3, 1).numpy() + 1) * 127.5 + 0.5).astype(np.uint8)


def train_external_gm(gm: ExternalGM, crops: np.ndarray, cfg: ExternalConfig, realism_ref) -> dict[str, Any]:
    """Train ``gm`` on ``crops`` (uint8 NHWC) for ``min_steps``, then until 64 samples reach
    ``cfg.max_swd`` against the crops (checked every ``check_every`` steps) or ``max_steps`` run
    out; sample and label it."""
    from gmparse.data_pipeline.realism import RealismReference
    from gmparse.data_pipeline.zoo.introspect import measure_architecture

    torch.set_num_threads(1)
    seed = int(np.random.SeedSequence([cfg.seed, sum(map(ord, gm.gm_id))]).generate_state(1)[0])
    torch.manual_seed(seed)
    t0 = time.thread_time()
    model = gm.build()
    gate = RealismReference(crops, seed=cfg.seed)
    untrained = _sample(model, 64, seed + 1)
    real = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2))).float() / 127.5 - 1
    batches = torch.Generator().manual_seed(seed + 2)
    steps = 0
    while steps < cfg.max_steps:
        for _ in range(cfg.check_every):
            idx = torch.randint(len(real), (cfg.batch_size,), generator=batches)
            model.step(real[idx])
        steps += cfg.check_every
        gate_swd = gate.swd(_sample(model, 64, seed + 1))
        if steps >= cfg.min_steps and gate_swd <= cfg.max_swd:
            break
    images = _sample(model, cfg.images_per_gm, seed + 3)
    measured = realism_ref.measure(images)
    measured["swd_untrained"] = realism_ref.swd(untrained)
    labels = measure_architecture(model.net, gm.loss_types)
    return {"gm": gm, "images": images, "labels": labels, "realism": measured, "steps": steps,
            "gate_swd": gate_swd, "passed": gate_swd <= cfg.max_swd, "train_seconds": time.thread_time() - t0}


STAGING_KEY = "build_key"


def _staging(out: Path, cfg: ExternalConfig) -> Path:
    """The build's staging folder ``.<name>.partial`` beside ``out``, emptied when it holds another
    configuration's GMs (their images would not be this build's)."""
    from gmparse.data_pipeline.collection import atomic_write_bytes

    d = out.parent / f".{out.name}.partial"
    marker = d / STAGING_KEY
    if d.exists() and (not marker.is_file() or marker.read_text() != cfg.key()):
        shutil.rmtree(d)
    if not marker.is_file():
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(marker, cfg.key().encode())
    return d


def _save_result(staging: Path, r: dict[str, Any]) -> None:
    """Persist one trained GM's result (images, labels, gate and realism): the images first, the
    JSON last, each written then renamed, so a GM is either wholly there or not at all."""
    import io
    import json

    from gmparse.data_pipeline.collection import atomic_write_bytes

    gm_id, lab = r["gm"].gm_id, r["labels"]
    buf = io.BytesIO()
    np.save(buf, r["images"])
    atomic_write_bytes(staging / f"{gm_id}.npy", buf.getvalue())
    meta = {"gm_id": gm_id, "realism": {k: float(v) for k, v in r["realism"].items()}, "steps": int(r["steps"]),
            "gate_swd": float(r["gate_swd"]), "passed": bool(r["passed"]), "train_seconds": float(r["train_seconds"]),
            "labels": lab.to_dict()}
    atomic_write_bytes(staging / f"{gm_id}.json", json.dumps(meta, indent=1).encode())


def _load_results(staging: Path) -> dict[str, dict[str, Any]]:
    """The results a cut-off build of the same configuration persisted, by GM id."""
    import json

    from gmparse.data_pipeline.schema import GMLabels

    by_id = {gm.gm_id: gm for gm in EXTERNAL_GMS}
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(staging.glob("*.json")):
        try:
            meta = json.loads(p.read_text())
            images = np.load(staging / f"{meta['gm_id']}.npy")
            out[meta["gm_id"]] = {**meta, "gm": by_id[meta["gm_id"]], "images": images,
                                  "labels": GMLabels.from_dict(meta["labels"])}
        except (OSError, ValueError, KeyError):
            continue  # half-written or of a GM no longer in the list: trained again
    return out


def build_external_collection(out: str | Path, cfg: ExternalConfig | None = None, overwrite: bool = False,
                              progress: bool = True):
    """Build the external test collection at ``out``: one Ray task per GM, written as the zoo's.

    Resumable: each trained GM is persisted at once in ``.<name>.partial`` beside ``out``; a rerun
    of the same configuration trains only the GMs missing there (a GM's training is seeded by the
    configuration and its id, so a resumed build writes the files an uninterrupted one would)."""
    import pandas as pd
    import ray
    from tqdm.auto import tqdm

    from gmparse.data_pipeline import schema
    from gmparse.data_pipeline.collection import (
        REAL_GM_ID,
        CollectionError,
        CollectionWriter,
        gms_row,
        image_rows,
        open_collection,
    )
    from gmparse.data_pipeline.preprocess import encode_png
    from gmparse.data_pipeline.real_images import load_bundled_photos, random_crops
    from gmparse.data_pipeline.realism import RealismReference, calibration, realism_summary
    from gmparse.data_pipeline.realism import caption as realism_caption
    from gmparse.data_pipeline.zoo.grid import sample_grid_png

    cfg = cfg or ExternalConfig()
    if not ray.is_initialized():
        ray.init()
    t0 = time.time()
    pool = load_bundled_photos()
    # other crop seeds than the zoo's: the same photos, never the same crops
    crops = random_crops(pool, cfg.train_crops, cfg.image_size, seed=cfg.seed + 7_000_001)
    real = random_crops(pool, cfg.real_images, cfg.image_size, seed=cfg.seed + 7_000_002)
    ref = ray.put(RealismReference(real, seed=cfg.seed))
    task = ray.remote(num_cpus=1)(train_external_gm)
    out = Path(out)
    with CollectionWriter(out, overwrite=overwrite) as writer:
        staging = _staging(writer.out, cfg)
        saved = _load_results(staging)
        results: dict[int, dict[str, Any]] = {i: saved[gm.gm_id] for i, gm in enumerate(EXTERNAL_GMS)
                                              if gm.gm_id in saved}
        if results and progress:
            print(f"external build: {len(results)} of {len(EXTERNAL_GMS)} GMs already trained in {staging}; "
                  f"training {len(EXTERNAL_GMS) - len(results)}", flush=True)
        pending = {task.remote(gm, crops, cfg, ref): i for i, gm in enumerate(EXTERNAL_GMS) if i not in results}
        with tqdm(total=len(EXTERNAL_GMS), initial=len(results), desc="external GMs", disable=not progress) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(done[0])
                r = ray.get(done[0])
                _save_result(staging, r)
                results[i] = r
                bar.update(1)
                bar.set_postfix(gm=r["gm"].gm_id, swd=f"{r['gate_swd']:.0f}", gate="pass" if r["passed"] else "FAIL")
        for i in sorted(results):
            r = results[i]
            if r["passed"]:
                s = cfg.image_size
                writer.write_shard(i, image_rows(r["gm"].gm_id, [encode_png(im) for im in r["images"]],
                                                 [(s, s)] * len(r["images"]), True))
                writer.write_grid(r["gm"].gm_id, sample_grid_png(r["images"][:32], real[:32],
                                                                 caption=realism_caption(r["realism"])))
        kept = [results[i] for i in sorted(results) if results[i]["passed"]]
        failed = [{"gm_id": r["gm"].gm_id, "gate_swd": r["gate_swd"], "steps": r["steps"]}
                  for r in results.values() if not r["passed"]]
        if not kept:
            raise CollectionError(f"no external GM reached the realism threshold {cfg.max_swd}: {failed}")
        ranges = schema.Ranges.fit(np.stack([r["labels"].continuous_vector() for r in kept]))
        rows = []
        for r in kept:
            extra = {f"realism_{k}": v for k, v in r["realism"].items()}
            extra.update({"paper": r["gm"].paper, "train_steps": r["steps"], "gate_swd": r["gate_swd"],
                          "train_seconds": r["train_seconds"]})
            rows.append(gms_row(r["gm"].gm_id, r["gm"].family, "external", r["labels"], ranges, "", extra))
        rows.append(gms_row(REAL_GM_ID, "real", "bundled", None, ranges))
        s = cfg.image_size
        writer.write_shard(len(EXTERNAL_GMS), image_rows(REAL_GM_ID, [encode_png(im) for im in real],
                                                         [(s, s)] * len(real), False))
        per_gm = pd.DataFrame([{"gm_id": r["gm"].gm_id, "family": r["gm"].family, **r["realism"]} for r in kept])
        manifest = {
            "kind": "external",
            "build_key": cfg.key(),
            "build": asdict(cfg),
            "image_size": s,
            "ranges": ranges.to_dict(),
            "real_sources": pool.sources,
            "papers": {r["gm"].gm_id: r["gm"].paper for r in kept},
            "counts": {"real_images": len(real), "gms_requested": len(EXTERNAL_GMS), "gms_rejected": len(failed)},
            "rejected": failed,
            "realism": realism_summary(per_gm, calibration(real, cfg.images_per_gm, cfg.seed)),
            "build_seconds": round(time.time() - t0, 1),
        }
        path = writer.commit(pd.DataFrame(rows), manifest)
    shutil.rmtree(staging, ignore_errors=True)
    return open_collection(path)
