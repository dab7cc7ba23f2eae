"""Training budgets and quality-gate thresholds of the zoo (one dataclass, three presets)."""

from __future__ import annotations

from dataclasses import dataclass, replace

#: how a GM's hidden layers get their activation (``sample_specs``'s ``hidden_act``)
HIDDEN_ACT_MODES: tuple[str, ...] = ("independent", "tied")
#: how ``sample_specs`` picks each GM's family: "random" (after the first cycle of LOSS_CONFIGS, a
#: random one: the builds before 2026-12, ~5/14 GANs and 1/14 diffusion) or "balanced" (specs.FAMILY_SHARES)
FAMILY_MIXES: tuple[str, ...] = ("random", "balanced")

#: per-family learning-rate multipliers of ``lr`` (few-step training wants fast GANs/VAEs)
FAMILY_LR_SCALE: tuple[tuple[str, float], ...] = (
    ("gan", 2.0), ("vae", 3.0), ("autoencoder", 4.0), ("diffusion", 4.0), ("autoregressive", 4.0),
)  # fmt: skip
#: per-family multipliers of ``steps`` / ``retry_steps``, where steps buy realism: measured on the
#: default preset's first 14 GMs (SWD x1e3 to held-out real crops, data_pipeline.realism), 3x the
#: steps took GANs from 237/231 to 177/129 and the autoregressive model from 523 to 280, while
#: VAEs (560 -> 538), autoencoders (248 -> 228) and diffusion (325 -> 454) gained little or lost
FAMILY_STEP_SCALE: tuple[tuple[str, float], ...] = (
    ("gan", 2.5), ("vae", 1.0), ("autoencoder", 1.0), ("diffusion", 2.0), ("autoregressive", 3.0),
)  # fmt: skip
#: the scales before realism was measured: smoke (plumbing runs, seconds a GM) and large (its
#: per-GM cost was measured with these, benchmarks/RESULTS.md section 7) keep them
PLAIN_STEP_SCALE: tuple[tuple[str, float], ...] = (
    ("gan", 1.0), ("vae", 1.0), ("autoencoder", 1.0), ("diffusion", 2.0), ("autoregressive", 1.0),
)  # fmt: skip


@dataclass(frozen=True)
class ZooTrainConfig:
    """How long each GM trains, when its images are good enough, and how often to retry.

    A GM whose samples fail the gate trains ``retry_steps`` more, up to ``max_retries``
    times; then it is rebuilt from a seed derived from the spec's, up to ``max_rebuilds``
    times (same architecture, so the same labels). Every budget is a count of steps, so a GM
    (its images, its gate verdict, whether it is kept) is the same on a fast or a slow, idle or
    loaded machine. ``max_seconds`` is only a guard against a runaway GM: one that uses more CPU
    time fails loudly (``zoo.train.GMBudgetExceeded``), so it never silently decides what a
    collection holds. It is not part of a build's key. (Until 2026-12 it was a wall-time budget
    that cut slow GMs short, so the same build arguments kept other GMs on a slower machine.)
    """

    steps: int = 150
    batch_size: int = 32
    lr: float = 5e-4  # base rate; each family's is lr * its lr_scale
    retry_steps: int = 100
    max_retries: int = 2
    max_rebuilds: int = 1
    max_seconds: float | None = 600.0  # CPU-seconds guard per GM (None: off); see the docstring
    gate_images: int = 64
    min_pixel_std: float = 4.0  # mean per-image pixel std, 0..255 scale
    min_diversity_ratio: float = 0.25  # sample diversity / real-crop diversity
    min_improvement: float = 1.5  # untrained distance / trained distance to the real crops
    max_swd: float | None = None  # realism gate: SWD x 1e3 of the gate samples to the crops (None: off)
    lr_scale: tuple[tuple[str, float], ...] = FAMILY_LR_SCALE
    step_scale: tuple[tuple[str, float], ...] = FAMILY_STEP_SCALE
    gan_d_width: int = 16  # channels of the critic's first layer
    gan_d_lr_ratio: float = 2.0  # critic lr / generator lr (TTUR)
    gan_spectral: bool = True  # spectral norm in the critic (not for wasserstein, which has its penalty)
    gan_mbstd: bool = True  # minibatch-std channel in the critic (against mode collapse)
    gan_init: bool = True  # He init, zero biases for GAN generators and VAE decoders
    gan_gp_weight: float = 10.0  # WGAN-GP gradient-penalty weight
    gan_wgan_spectral: bool = False  # spectral norm in the WGAN-GP critic too
    gan_wgan_betas: tuple[float, float] = (0.5, 0.9)
    gan_instance_noise: float = 0.1  # std of noise on the critic's inputs, decayed to 0 over training
    vae_kl_scale: float = 0.1  # multiplies the spec's beta (beta << 1 avoids posterior collapse)
    vae_kl_warmup: int = 100  # steps over which the KL weight ramps up from 0
    diffusion_timesteps: int = 100
    diffusion_sample_steps: int = 10
    ar_levels: int = 16

    def with_(self, **changes: object) -> ZooTrainConfig:
        return replace(self, **changes)  # type: ignore[arg-type]

    def family_lr(self, family: str) -> float:
        return self.lr * dict(self.lr_scale).get(family, 1.0)

    def family_steps(self, family: str, retry: bool = False) -> int:
        base = self.retry_steps if retry else self.steps
        return max(1, int(round(base * dict(self.step_scale).get(family, 1.0))))


ZOO_PRESETS: dict[str, ZooTrainConfig] = {
    "smoke": ZooTrainConfig(  # plumbing runs: short, a lenient gate, <= 8 s of CPU per GM
        steps=40, batch_size=16, lr=5e-4, retry_steps=20, max_retries=2, max_rebuilds=1, max_seconds=120.0,
        gate_images=32, diffusion_sample_steps=5, min_diversity_ratio=0.1, min_improvement=1.2,
        step_scale=PLAIN_STEP_SCALE,
    ),
    # default: the realism gate asks a GM's 64 gate samples for an SWD <= 550 to the training crops
    # (real vs real: 88 at 64 images; the GMs of the collection before it: median 280, worst 641;
    # untrained GMs 400-1,200); a GM above it trains retry_steps more, so the budget goes where
    # realism is missing, and is rejected if it never gets there
    "default": ZooTrainConfig(max_swd=550.0),
    # wide: the default's budgets and gate at batch 16, measured on the default's first 15 GMs (3 per
    # family, one core each): 142 CPU-s against 222 (1.56x), median SWD 293 against 275 (paired mean
    # +20), 13 of 14 paired GMs still past the gate (a diffusion GM failed it)
    "wide": ZooTrainConfig(max_swd=550.0, batch_size=16),
    # large: 64x64, sized so a 16-core node builds 400 GMs in well under an hour (one core per GM).
    # Measured per training step on one core at batch 64 (GAN 0.38 s, VAE 0.20, diffusion 0.12,
    # autoregressive 0.70; sampling 1,000 autoregressive images 105 s), the old budget of 1,500
    # steps (cap 900 s) cost ~560 s a GM: ~4 h for 400 GMs on 16 cores. Batch 32, 400 steps and a
    # 120 s cap brought a GM to ~40-225 s (benchmarks/RESULTS.md, section 7); the cap is now a guard.
    "large": ZooTrainConfig(steps=400, batch_size=32, retry_steps=200, max_retries=2, max_rebuilds=1,
                            max_seconds=1800.0, gate_images=128, min_improvement=2.0, diffusion_sample_steps=20,
                            step_scale=PLAIN_STEP_SCALE),
}  # fmt: skip
