"""What a collection is built from (``BuildConfig``) and its presets, apart from the build itself.

Torch-free, so that an entry point's ``--help`` (which shows every preset's values) and a job
that only opens a built collection do not load the zoo.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from gmparse.data_pipeline.paths import collections_root


@dataclass(frozen=True)
class BuildConfig:
    """What a collection is built from; its hash decides whether a built one is reused."""

    preset: str = "smoke"
    n_gms: int = 16
    images_per_gm: int = 64
    image_size: int = 32
    real_images: int = 256
    train_crops: int = 1024
    zoo_preset: str = "smoke"
    seed: int = 0
    real_dir: str | None = None  # the user's own photos (replaces real_source)
    real_source: str = "photos"  # bundled real images: photos (17 photos, multi-scale crops) | faces (LFW, one domain)
    max_rows_per_shard: int = 4096
    implementations: str = "backbone"  # comma-separated: how each family may be written (zoo.generators.IMPLEMENTATIONS)
    #: the hidden layers' activation: "tied" to the last-block label where it can be (a ReLU or
    #: LeakyReLU last block makes the network's), as real GM code does, or "independent" of it
    #: (drawn on its own; the builds before 2026-11-24, e.g. default-s0-6c855534)
    hidden_act: str = "tied"
    #: how each GM's family is chosen: "random" (the builds before 2026-12) or "balanced" (a fixed
    #: share per family at every prefix: data_pipeline.zoo.specs.FAMILY_SHARES)
    family_mix: str = "random"
    #: share of a GPU each GM's task asks Ray for (0: one CPU core per GM). How a build runs, not
    #: what it builds: not in key()
    gpus_per_gm: float = 0.0
    #: override of the zoo preset's per-GM CPU-seconds guard (ZooTrainConfig.max_seconds), which
    #: fails a runaway GM loudly and never decides what is built: not in key()
    max_gm_seconds: float | None = None

    def __post_init__(self) -> None:
        # the zoo owns the modes (its torch-free config module); real_images the sources
        from gmparse.data_pipeline.real_images import REAL_SOURCES
        from gmparse.data_pipeline.zoo.config import FAMILY_MIXES, HIDDEN_ACT_MODES

        if self.real_source not in REAL_SOURCES:
            raise ValueError(f"unknown real_source {self.real_source!r}; known: {sorted(REAL_SOURCES)}")
        if self.hidden_act not in HIDDEN_ACT_MODES:
            raise ValueError(f"hidden_act must be one of {HIDDEN_ACT_MODES}, got {self.hidden_act!r}")
        if self.family_mix not in FAMILY_MIXES:
            raise ValueError(f"family_mix must be one of {FAMILY_MIXES}, got {self.family_mix!r}")
        if not 0.0 <= self.gpus_per_gm <= 1.0:
            raise ValueError(f"gpus_per_gm must be in [0, 1] (a share of one GPU), got {self.gpus_per_gm}")

    def implementation_tuple(self) -> tuple[str, ...]:
        return tuple(w.strip() for w in self.implementations.split(",") if w.strip())

    def key(self) -> str:
        """Hash of these fields and of the zoo preset's settings (not just its name), so a
        collection built before a preset changed is rebuilt, not reused. ``implementations``
        and ``real_source`` enter only when not the default, ``hidden_act`` only when not
        "independent" (its first default) and ``family_mix`` only when not "random"; ``gpus_per_gm``
        (a GPU build of a key is the same GMs, not bitwise the same images) and the CPU-seconds
        guard (``max_gm_seconds``, the zoo's ``max_seconds``) never do. ``budget: steps`` marks the
        builds whose GMs no wall-time cap cut short (from 2026-12), so none of the earlier is reused."""
        return self._hash(self._key_fields())

    def lineage_key(self) -> str:
        """The key without ``n_gms``: builds of one lineage share their first GMs (a prefix of
        ``sample_specs`` is the smaller sequence), so a larger build reuses a smaller one's GMs."""
        return self._hash(self.lineage_fields())

    def lineage_fields(self) -> dict[str, Any]:
        d = self._key_fields()
        d.pop("n_gms")
        return d

    def _key_fields(self) -> dict[str, Any]:
        from gmparse.data_pipeline.zoo.config import ZOO_PRESETS

        zoo = ZOO_PRESETS.get(self.zoo_preset)
        zoo_d = asdict(zoo) if zoo is not None else None
        if zoo_d is not None:
            zoo_d.pop("max_seconds")
        d = {**asdict(self), "zoo": zoo_d, "budget": "steps"}
        for k in ("gpus_per_gm", "max_gm_seconds"):
            d.pop(k)
        if self.implementation_tuple() == ("backbone",):
            d.pop("implementations")
        if self.real_source == "photos":
            d.pop("real_source")
        if self.hidden_act == "independent":
            d.pop("hidden_act")
        if self.family_mix == "random":
            d.pop("family_mix")
        return d

    @staticmethod
    def _hash(d: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def default_path(self) -> Path:
        return collections_root() / f"{self.preset}-s{self.seed}-{self.key()[:8]}"


BUILD_PRESETS: dict[str, BuildConfig] = {
    "smoke": BuildConfig(),
    "default": BuildConfig(
        preset="default", n_gms=64, images_per_gm=256, image_size=32, real_images=4096,
        train_crops=4096, zoo_preset="default",
    ),
    # wide: hundreds of GMs at the default's size and gate, every family at a fixed share
    # (zoo.specs.FAMILY_SHARES) and every implementation; its zoo preset trains at batch 16 (1.77x
    # cheaper a GM than the default's 32; benchmarks/RESULTS.md section 8). Grows by its tail:
    # --n-gms 704 reuses these. 352 GMs, as ~7% of them fail the gate: 320 or more are kept.
    "wide": BuildConfig(
        preset="wide", n_gms=352, images_per_gm=256, image_size=32, real_images=4096, train_crops=4096,
        zoo_preset="wide", implementations="backbone,dcgan,resnet,stylegan,unet", family_mix="balanced",
    ),
    "large": BuildConfig(
        preset="large", n_gms=400, images_per_gm=1000, image_size=64, real_images=20000,
        train_crops=20000, zoo_preset="large", gpus_per_gm=0.25,  # four GMs per GPU (cluster/aws.yaml: 4 CPUs, 1 GPU)
    ),
}


def build_config(preset: str, **overrides: Any) -> BuildConfig:
    if preset not in BUILD_PRESETS:
        raise ValueError(f"unknown build preset {preset!r}; choose from {sorted(BUILD_PRESETS)}")
    return replace(BUILD_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
