"""GM specs: what to build, and a covering sampler so every label value occurs.

A spec names the family, the loss set, the architecture knobs (:class:`ArchSpec`) and a
seed; it never carries labels, which are measured from the built module. ``sample_specs``
first cycles through loss configurations covering all of ``schema.LOSS_TYPES`` and picks,
per discrete field, the least-used class the family allows, so every loss type and every
discrete class occurs once ``n >= MIN_COVERING_N``; after that choices are random.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from gmparse.data_pipeline.schema import DISCRETE, DISCRETE_NAMES, FAMILIES, LOSS_TYPES, NONLINEARITIES

from .backbone import POOLING, ArchSpec, stage_count
from .config import FAMILY_MIXES, HIDDEN_ACT_MODES
from .generators import ALL_IMPLEMENTATIONS, IMPLEMENTATIONS, RESTRICTIONS
from .layers import HIDDEN_ACTS

#: (family, loss set) in the order the covering design cycles through; covers LOSS_TYPES
LOSS_CONFIGS: tuple[tuple[str, frozenset[str]], ...] = (
    ("gan", frozenset({"adversarial"})),
    ("vae", frozenset({"kl", "l1"})),
    ("diffusion", frozenset({"mse"})),
    ("autoregressive", frozenset({"cross_entropy"})),
    ("gan", frozenset({"hinge"})),
    ("autoencoder", frozenset({"l2"})),
    ("gan", frozenset({"least_squares"})),
    ("vae", frozenset({"kl", "l2"})),
    ("gan", frozenset({"wasserstein"})),
    ("autoencoder", frozenset({"l1", "adversarial"})),
    ("gan", frozenset({"mmd"})),
    ("autoencoder", frozenset({"l2", "least_squares"})),
    ("gan", frozenset({"adversarial"})),
    ("autoencoder", frozenset({"l1", "hinge"})),
)
assert set().union(*(ls for _, ls in LOSS_CONFIGS)) == set(LOSS_TYPES)
ZOO_FAMILIES: tuple[str, ...] = ("gan", "vae", "autoencoder", "diffusion", "autoregressive")
assert set(ZOO_FAMILIES) <= set(FAMILIES)
LATENT_FAMILIES = frozenset({"gan", "vae"})
#: the smallest n at which sample_specs guarantees full coverage
MIN_COVERING_N = 16


@dataclass(frozen=True)
class GMSpec:
    """Everything needed to rebuild one zoo GM (JSON round-trips)."""

    gm_id: str
    family: str
    loss_types: frozenset[str]
    seed: int
    image_size: int
    arch: ArchSpec
    options: dict = field(default_factory=dict, hash=False, compare=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss_types", frozenset(self.loss_types))
        if self.family not in ZOO_FAMILIES:
            raise ValueError(f"zoo family must be one of {ZOO_FAMILIES}, got {self.family!r}")
        unknown = self.loss_types - set(LOSS_TYPES)
        if unknown:
            raise ValueError(f"unknown loss types {sorted(unknown)}")

    def to_json(self) -> str:
        d = asdict(self)
        d["loss_types"] = sorted(self.loss_types)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> GMSpec:
        d = json.loads(s)
        d["arch"] = ArchSpec(**d["arch"])
        d["loss_types"] = frozenset(d["loss_types"])
        return cls(**d)


def _allowed(family: str, name: str, chosen: dict[str, str], implementation: str = "backbone") -> tuple[str, ...]:
    """Discrete classes a family written as ``implementation`` can realise (given the choices so far)."""
    if implementation in RESTRICTIONS and name in RESTRICTIONS[implementation]:
        return RESTRICTIONS[implementation][name]
    values = DISCRETE[name]
    if family == "autoregressive":  # row-causal: no resampling; instance stats would leak rows
        return {"downsampling": ("no",), "upsampling": ("nearest",), "norm_type": ("batch", "none")}.get(
            name, values
        )
    if name == "norm_type" and family in LATENT_FAMILIES:
        # a latent decoder with plain instance norm fixes every sample's channel statistics
        # (each image gets the same color moments): its samples cannot pass the diversity gate
        return tuple(v for v in values if v != "instance")
    if name == "upsampling" and family not in LATENT_FAMILIES and chosen["downsampling"] == "no":
        return ("nearest",)  # an image-to-image net without down-sampling has no up-sampling
    return values


def _family_options(family: str, rng: np.random.Generator) -> dict:
    if family == "vae":
        return {"beta": float(rng.choice([0.25, 0.5, 1.0]))}
    if family == "autoencoder":
        m = np.eye(3) + rng.normal(0, 0.2, (3, 3))
        m /= m.sum(axis=1, keepdims=True)
        return {
            "color_matrix": np.round(m, 4).tolist(),
            "gamma": float(np.round(rng.uniform(0.7, 1.4), 3)),
            "filter": str(rng.choice(["none", "blur", "sharpen"])),
            "adv_weight": 0.05,
        }
    return {}


def _sample_arch(family: str, disc: dict[str, str], image_size: int, rng: np.random.Generator,
                 implementation: str = "backbone") -> ArchSpec:
    downsampling = disc["downsampling"] == "yes"
    skip = disc["skip_connection"] == "yes"
    mid_blocks = int(rng.integers(0, 4))
    if skip or family == "autoregressive":
        mid_blocks = max(mid_blocks, 1)
    max_down = max(1, min(2, stage_count(image_size)))
    return ArchSpec(
        width=int(rng.choice([8, 12, 16, 24])),
        fc_layers=int(rng.integers(0, 4)),
        fc_hidden=int(rng.choice([32, 64, 128])),
        stage_blocks=bool(rng.random() < 0.4) and family != "autoregressive",
        mid_blocks=mid_blocks,
        layers_per_block=int(rng.integers(1, 4)),
        norm=disc["norm_type"],
        act=str(rng.choice(HIDDEN_ACTS)),
        block_act=disc["last_block_nonlinearity"],
        last_act=disc["last_layer_nonlinearity"],
        upsampling=disc["upsampling"],
        skip=skip,
        downsampling=downsampling,
        down_stages=int(rng.integers(1, max_down + 1)) if downsampling else 1,
        pool=str(rng.choice(POOLING)) if downsampling else "none",
        z_dim=int(rng.choice([16, 32, 64])),
        implementation=implementation,
    )


#: the "balanced" mix's share of each family, fixed by design: GANs a little more, as they carry five
#: of the ten loss types; every prefix of the sequence is within one GM of these shares
FAMILY_SHARES: tuple[tuple[str, float], ...] = (
    ("gan", 0.3), ("vae", 0.2), ("autoencoder", 0.2), ("diffusion", 0.15), ("autoregressive", 0.15),
)  # fmt: skip
assert abs(sum(v for _, v in FAMILY_SHARES) - 1) < 1e-9 and {f for f, _ in FAMILY_SHARES} == set(ZOO_FAMILIES)


def _balanced_configs(n: int) -> list[tuple[str, frozenset[str]]]:
    """The first ``n`` (family, loss set) of the balanced mix: each GM goes to the family furthest
    below its share so far (smooth weighted round-robin, ties in FAMILY_SHARES order), and each
    family cycles through its loss sets in LOSS_CONFIGS order. A prefix is the smaller sequence."""
    shares = dict(FAMILY_SHARES)
    # a loss set listed twice in LOSS_CONFIGS counts once
    losses = {f: list(dict.fromkeys(ls for g, ls in LOSS_CONFIGS if g == f)) for f in shares}
    counts = dict.fromkeys(shares, 0)
    out = []
    for i in range(n):
        family = max(shares, key=lambda f: shares[f] * (i + 1) - counts[f])
        out.append((family, losses[family][counts[family] % len(losses[family])]))
        counts[family] += 1
    return out


def sample_specs(n: int, seed: int, image_size: int, implementations: tuple[str, ...] = ("backbone",),
                 hidden_act: str = "independent", family_mix: str = "random") -> list[GMSpec]:
    """``n`` GM specs, deterministic by ``seed``; covering every loss type and discrete
    class once ``n >= MIN_COVERING_N`` (asserted by the tests).

    With more than the backbone in ``implementations``, each GM of a family that can be written
    otherwise (``generators.IMPLEMENTATIONS``) is written in the implementation least used so far
    in its family (ties broken at random), which then restricts its discrete classes. The RNG draws for
    the backbone-only default are unchanged, so existing collections keep their specs.

    ``hidden_act="tied"``: a GM whose last block ends in ReLU or LeakyReLU uses it in every hidden
    layer, as real GM code does (one activation per network); a Tanh or Sigmoid last block keeps the
    hidden activation drawn on its own (builds default to it: ``BuildConfig.hidden_act``). Drawn
    independently (this function's default, the builds before 2026-11-24), the last-block label is one
    layer among many of another activation, and a collection can tie the two by chance (docs/decisions.md,
    2026-11-24: ``--hidden-act tied``). The RNG draws are the same either way, so only
    the hidden activation of the GMs it ties changes.

    ``family_mix="balanced"`` gives each family its share of FAMILY_SHARES at every prefix
    (``_balanced_configs``) instead of drawing it. Either way spec ``i`` does not depend on ``n``:
    the first N specs of an M-spec sequence are the N-spec sequence (a collection grows by its tail)."""
    if image_size not in (16, 32, 64, 128):
        raise ValueError(f"image_size must be 16, 32, 64 or 128, got {image_size}")
    if hidden_act not in HIDDEN_ACT_MODES:
        raise ValueError(f"hidden_act must be one of {HIDDEN_ACT_MODES}, got {hidden_act!r}")
    if family_mix not in FAMILY_MIXES:
        raise ValueError(f"family_mix must be one of {FAMILY_MIXES}, got {family_mix!r}")
    balanced = _balanced_configs(n) if family_mix == "balanced" else None
    unknown = set(implementations) - set(ALL_IMPLEMENTATIONS)
    if unknown or "backbone" not in implementations:
        raise ValueError(f"implementations must include 'backbone' and be among {ALL_IMPLEMENTATIONS}, "
                         f"got {implementations}")
    impl_used = {f: dict.fromkeys(implementations, 0) for f in ZOO_FAMILIES}
    rng = np.random.default_rng(seed)
    used = {name: dict.fromkeys(values, 0) for name, values in DISCRETE.items()}
    order = ("downsampling",) + tuple(k for k in DISCRETE_NAMES if k != "downsampling")
    specs = []
    for i in range(n):
        if balanced is not None:
            family, losses = balanced[i]
        elif i < len(LOSS_CONFIGS):
            family, losses = LOSS_CONFIGS[i]
        else:
            family, losses = LOSS_CONFIGS[int(rng.integers(len(LOSS_CONFIGS)))]
        implementation = "backbone"
        options = [m for m in IMPLEMENTATIONS.get(family, ("backbone",)) if m in impl_used[family]]
        if len(options) > 1:
            fewest = min(impl_used[family][m] for m in options)
            pool_impl = [m for m in options if impl_used[family][m] == fewest]
            implementation = pool_impl[int(rng.integers(len(pool_impl)))]
        impl_used[family][implementation] += 1
        disc: dict[str, str] = {}
        for name in order:
            allowed = _allowed(family, name, disc, implementation)
            counts = np.array([used[name][v] for v in allowed])
            if (np.array(list(used[name].values())) == 0).any():
                pool = [v for v, c in zip(allowed, counts) if c == counts.min()]
            else:
                pool = list(allowed)
            disc[name] = str(pool[int(rng.integers(len(pool)))])
            used[name][disc[name]] += 1
        assert disc["last_layer_nonlinearity"] in NONLINEARITIES
        arch = _sample_arch(family, disc, image_size, rng, implementation)
        if hidden_act == "tied" and arch.block_act in HIDDEN_ACTS:
            arch = replace(arch, act=arch.block_act)
        gm_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        specs.append(
            GMSpec(
                gm_id=f"{family}-{'-'.join(sorted(losses))}-{i:03d}",
                family=family,
                loss_types=losses,
                seed=gm_seed,
                image_size=image_size,
                arch=arch,
                options=_family_options(family, rng),
            )
        )
    return specs
