"""Zoo families: one registry from family name to its trainable GM class."""

from __future__ import annotations

from ..config import ZooTrainConfig
from ..specs import GMSpec
from .autoencoder import AutoencoderFamily
from .autoregressive import AutoregressiveFamily
from .base import Family
from .diffusion import DiffusionFamily
from .gan import GANFamily
from .vae import VAEFamily

FAMILY_REGISTRY: dict[str, type[Family]] = {
    "gan": GANFamily,
    "vae": VAEFamily,
    "autoencoder": AutoencoderFamily,
    "diffusion": DiffusionFamily,
    "autoregressive": AutoregressiveFamily,
}


def build_family(spec: GMSpec, cfg: ZooTrainConfig) -> Family:
    """The untrained GM of ``spec`` (uses the global torch RNG for initialisation)."""
    return FAMILY_REGISTRY[spec.family](spec, cfg)


__all__ = ["FAMILY_REGISTRY", "Family", "build_family"]
