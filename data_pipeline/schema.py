"""The hyperparameter schema: the single source of truth for label names, kinds and order.

Order and class lists follow the public RED116 ground-truth files (15 architecture values
= 9 continuous + 6 discrete; 10 loss types in 3 groups), so collections built here and
RED116's matrices convert into each other without a mapping table. Every other module
imports names from here; nothing else spells them out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

SCHEMA_VERSION = "1.0"

# --- architecture: 9 continuous values (RED116 column order) ---------------------------
CONTINUOUS: tuple[str, ...] = (
    "num_layers",
    "num_conv_layers",
    "num_fc_layers",
    "num_pool_layers",
    "num_norm_layers",
    "num_filters",
    "num_blocks",
    "layers_per_block",
    "num_params",
)

#: Raw ranges of RED116 (from the paper's ground truth); used to (de)normalize its files.
RED116_RANGES: dict[str, tuple[float, float]] = {
    "num_layers": (1, 105),
    "num_conv_layers": (0, 92),
    "num_fc_layers": (0, 40),
    "num_pool_layers": (0, 35),
    "num_norm_layers": (0, 57),
    "num_filters": (0, 8365),
    "num_blocks": (0, 15),
    "layers_per_block": (0, 20),
    "num_params": (300_304, 266_907_367),
}

# --- architecture: 6 discrete values (RED116 column order, class index = position) ------
NONLINEARITIES: tuple[str, ...] = ("relu", "tanh", "leaky_relu", "sigmoid")
DISCRETE: dict[str, tuple[str, ...]] = {
    "norm_type": ("batch", "instance", "adaptive_instance", "none"),
    "last_layer_nonlinearity": NONLINEARITIES,
    "last_block_nonlinearity": NONLINEARITIES,
    "upsampling": ("nearest", "transposed_conv"),
    "skip_connection": ("no", "yes"),
    "downsampling": ("no", "yes"),
}
DISCRETE_NAMES: tuple[str, ...] = tuple(DISCRETE)
NUM_CLASSES: tuple[int, ...] = tuple(len(v) for v in DISCRETE.values())

ARCHITECTURE: tuple[str, ...] = CONTINUOUS + DISCRETE_NAMES  # the 15 RED116 columns

# --- loss types: 10 bits in 3 groups (hierarchical: a group gates its members) ----------
LOSS_GROUPS: dict[str, tuple[str, ...]] = {
    "pixel": ("l1", "l2", "mse", "mmd"),
    "discriminator": ("least_squares", "wasserstein", "kl", "adversarial", "hinge"),
    "classification": ("cross_entropy",),
}
GROUP_NAMES: tuple[str, ...] = tuple(LOSS_GROUPS)
LOSS_TYPES: tuple[str, ...] = tuple(t for members in LOSS_GROUPS.values() for t in members)
#: index of each loss type's group in GROUP_NAMES, aligned with LOSS_TYPES
LOSS_GROUP_INDEX: tuple[int, ...] = tuple(
    gi for gi, members in enumerate(LOSS_GROUPS.values()) for _ in members
)

FAMILIES: tuple[str, ...] = (
    "gan",
    "vae",
    "autoencoder",
    "diffusion",
    "autoregressive",
    "attack",
    "other",
    "real",
)


# --- Parquet column names (gms.parquet) -------------------------------------------------
def raw_column(name: str) -> str:
    return f"raw_{name}"


def norm_column(name: str) -> str:
    return f"norm_{name}"


def loss_column(name: str) -> str:
    return f"loss_{name}"


def group_column(name: str) -> str:
    return f"group_{name}"


def label_columns() -> list[str]:
    """All label columns of gms.parquet in a fixed order."""
    return (
        [raw_column(c) for c in CONTINUOUS]
        + [norm_column(c) for c in CONTINUOUS]
        + list(DISCRETE_NAMES)
        + [loss_column(t) for t in LOSS_TYPES]
        + [group_column(g) for g in GROUP_NAMES]
    )


class SchemaError(ValueError):
    """A label that does not fit the schema (wrong name, class, length or range)."""


# --- normalization ------------------------------------------------------------------------
@dataclass(frozen=True)
class Ranges:
    """Min–max ranges of the continuous values; stored per collection in its manifest."""

    lo: dict[str, float]
    hi: dict[str, float]

    @classmethod
    def from_pairs(cls, pairs: Mapping[str, tuple[float, float]]) -> Ranges:
        missing = set(CONTINUOUS) - set(pairs)
        if missing:
            raise SchemaError(f"ranges miss continuous values: {sorted(missing)}")
        return cls({k: float(pairs[k][0]) for k in CONTINUOUS}, {k: float(pairs[k][1]) for k in CONTINUOUS})

    @classmethod
    def fit(cls, raw: np.ndarray) -> Ranges:
        """Ranges spanning the rows of a raw [n, 9] matrix (a constant column gets width 1)."""
        raw = np.asarray(raw, dtype=np.float64).reshape(-1, len(CONTINUOUS))
        lo, hi = raw.min(axis=0), raw.max(axis=0)
        hi = np.where(hi > lo, hi, lo + 1.0)
        return cls(dict(zip(CONTINUOUS, lo.tolist())), dict(zip(CONTINUOUS, hi.tolist())))

    def to_dict(self) -> dict[str, list[float]]:
        return {k: [self.lo[k], self.hi[k]] for k in CONTINUOUS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence[float]]) -> Ranges:
        return cls.from_pairs({k: (v[0], v[1]) for k, v in d.items()})

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.array([self.lo[k] for k in CONTINUOUS], dtype=np.float64),
            np.array([self.hi[k] for k in CONTINUOUS], dtype=np.float64),
        )

    def normalize(self, raw: np.ndarray, clip: bool = True) -> np.ndarray:
        """Raw [..., 9] -> [0, 1] (clipped unless told otherwise)."""
        lo, hi = self._arrays()
        out = (np.asarray(raw, dtype=np.float64) - lo) / (hi - lo)
        return np.clip(out, 0.0, 1.0) if clip else out

    def denormalize(self, norm: np.ndarray) -> np.ndarray:
        lo, hi = self._arrays()
        return np.asarray(norm, dtype=np.float64) * (hi - lo) + lo


RED116 = Ranges.from_pairs(RED116_RANGES)


# --- one GM's labels -------------------------------------------------------------------------
@dataclass
class GMLabels:
    """Ground truth of one GM: raw continuous values, discrete class indices, loss types."""

    continuous: dict[str, float]
    discrete: dict[str, int]
    loss_types: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        self.loss_types = frozenset(self.loss_types)
        self.validate()

    def validate(self) -> None:
        if set(self.continuous) != set(CONTINUOUS):
            raise SchemaError(
                f"continuous values must be exactly {list(CONTINUOUS)}, got {sorted(self.continuous)}"
            )
        for k, v in self.continuous.items():
            if not np.isfinite(v) or v < 0:
                raise SchemaError(f"continuous value {k}={v} must be finite and >= 0")
        if set(self.discrete) != set(DISCRETE_NAMES):
            raise SchemaError(
                f"discrete values must be exactly {list(DISCRETE_NAMES)}, got {sorted(self.discrete)}"
            )
        for k, v in self.discrete.items():
            if int(v) != v or not 0 <= int(v) < len(DISCRETE[k]):
                raise SchemaError(f"discrete value {k}={v} is not a class index of {DISCRETE[k]}")
            self.discrete[k] = int(v)
        unknown = set(self.loss_types) - set(LOSS_TYPES)
        if unknown:
            raise SchemaError(f"unknown loss types {sorted(unknown)}; known: {list(LOSS_TYPES)}")

    @property
    def loss_groups(self) -> frozenset[str]:
        return frozenset(GROUP_NAMES[LOSS_GROUP_INDEX[LOSS_TYPES.index(t)]] for t in self.loss_types)

    def continuous_vector(self) -> np.ndarray:
        return np.array([self.continuous[k] for k in CONTINUOUS], dtype=np.float64)

    def discrete_vector(self) -> np.ndarray:
        return np.array([self.discrete[k] for k in DISCRETE_NAMES], dtype=np.int64)

    def loss_vector(self) -> np.ndarray:
        return np.array([t in self.loss_types for t in LOSS_TYPES], dtype=np.int64)

    def group_vector(self) -> np.ndarray:
        groups = self.loss_groups
        return np.array([g in groups for g in GROUP_NAMES], dtype=np.int64)

    def discrete_names(self) -> dict[str, str]:
        return {k: DISCRETE[k][v] for k, v in self.discrete.items()}

    def to_row(self, ranges: Ranges) -> dict[str, float | int]:
        """Flat label columns for gms.parquet (see :func:`label_columns`)."""
        raw = self.continuous_vector()
        norm = ranges.normalize(raw)
        row: dict[str, float | int] = {}
        row.update({raw_column(k): float(v) for k, v in zip(CONTINUOUS, raw)})
        row.update({norm_column(k): float(v) for k, v in zip(CONTINUOUS, norm)})
        row.update({k: int(self.discrete[k]) for k in DISCRETE_NAMES})
        row.update({loss_column(t): int(b) for t, b in zip(LOSS_TYPES, self.loss_vector())})
        row.update({group_column(g): int(b) for g, b in zip(GROUP_NAMES, self.group_vector())})
        return row

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able form (the builds' per-GM records); :meth:`from_dict` reads it back."""
        return {"continuous": {k: float(v) for k, v in self.continuous.items()},
                "discrete": {k: int(v) for k, v in self.discrete.items()}, "loss_types": sorted(self.loss_types)}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> GMLabels:
        return cls(dict(d["continuous"]), dict(d["discrete"]), frozenset(d["loss_types"]))  # type: ignore[call-overload]

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> GMLabels:
        return cls(
            continuous={k: float(row[raw_column(k)]) for k in CONTINUOUS},  # type: ignore[arg-type]
            discrete={k: int(row[k]) for k in DISCRETE_NAMES},  # type: ignore[call-overload]
            loss_types=frozenset(t for t in LOSS_TYPES if int(row[loss_column(t)])),  # type: ignore[call-overload]
        )


def groups_from_losses(loss: np.ndarray) -> np.ndarray:
    """[n, 10] loss bits -> [n, 3] group bits (a group is on when any member is)."""
    loss = np.asarray(loss).reshape(-1, len(LOSS_TYPES))
    idx = np.asarray(LOSS_GROUP_INDEX)
    return np.stack([loss[:, idx == g].max(axis=1) for g in range(len(GROUP_NAMES))], axis=1).astype(np.int64)


@dataclass
class TargetArrays:
    """Label matrices of a set of GMs, the form the Parsing Network trains on."""

    continuous: np.ndarray  # [n, 9] normalized to [0, 1]
    discrete: np.ndarray  # [n, 6] class indices
    loss: np.ndarray  # [n, 10] bits
    group: np.ndarray  # [n, 3] bits

    def take(self, idx: np.ndarray | Sequence[int]) -> TargetArrays:
        """Rows ``idx`` (repeats allowed), e.g. each image's GM row."""
        return TargetArrays(*(np.asarray(getattr(self, f))[idx] for f in TARGET_FIELDS))

    @classmethod
    def concat(cls, parts: Sequence[TargetArrays]) -> TargetArrays:
        return cls(*(np.concatenate([np.asarray(getattr(p, f)) for p in parts]) for f in TARGET_FIELDS))


#: the label matrices' names, in TargetArrays order (also the target keys of a training batch)
TARGET_FIELDS: tuple[str, ...] = ("continuous", "discrete", "loss", "group")


def targets_from_rows(rows: Iterable[Mapping[str, object]]) -> TargetArrays:
    """Stack label columns of gms.parquet rows (dicts) into TargetArrays."""
    rows = list(rows)
    return TargetArrays(
        continuous=np.array([[float(r[norm_column(k)]) for k in CONTINUOUS] for r in rows], dtype=np.float32).reshape(-1, len(CONTINUOUS)),  # type: ignore[arg-type]
        discrete=np.array([[int(r[k]) for k in DISCRETE_NAMES] for r in rows], dtype=np.int64).reshape(-1, len(DISCRETE_NAMES)),  # type: ignore[call-overload]
        loss=np.array([[int(r[loss_column(t)]) for t in LOSS_TYPES] for r in rows], dtype=np.int64).reshape(-1, len(LOSS_TYPES)),  # type: ignore[call-overload]
        group=np.array([[int(r[group_column(g)]) for g in GROUP_NAMES] for r in rows], dtype=np.int64).reshape(-1, len(GROUP_NAMES)),  # type: ignore[call-overload]
    )


# --- RED116 matrix layout ----------------------------------------------------------------------
def to_red116(labels: Sequence[GMLabels], ranges: Ranges = RED116) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GM labels -> RED116's (net [n,15] normalized, loss [n,10], group [n,3]) matrices."""
    net = np.zeros((len(labels), len(ARCHITECTURE)), dtype=np.float64)
    loss = np.zeros((len(labels), len(LOSS_TYPES)), dtype=np.float64)
    for i, lab in enumerate(labels):
        net[i, : len(CONTINUOUS)] = ranges.normalize(lab.continuous_vector(), clip=False)
        net[i, len(CONTINUOUS) :] = lab.discrete_vector()
        loss[i] = lab.loss_vector()
    return net, loss, groups_from_losses(loss).astype(np.float64)


def from_red116(net: np.ndarray, loss: np.ndarray, ranges: Ranges = RED116, source: str = "RED116 matrix") -> list[GMLabels]:
    """RED116 matrices -> GM labels (continuous values de-normalized with ``ranges``).

    Raises SchemaError naming the row for a wrong width or an out-of-range class.
    """
    net = np.asarray(net, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if net.ndim != 2 or net.shape[1] != len(ARCHITECTURE):
        raise SchemaError(f"{source}: architecture matrix must be [n, {len(ARCHITECTURE)}], got {list(net.shape)}")
    if loss.ndim != 2 or loss.shape[1] != len(LOSS_TYPES):
        raise SchemaError(f"{source}: loss matrix must be [n, {len(LOSS_TYPES)}], got {list(loss.shape)}")
    if len(net) != len(loss):
        raise SchemaError(f"{source}: {len(net)} architecture rows but {len(loss)} loss rows")
    out = []
    for i in range(len(net)):
        raw = ranges.denormalize(net[i, : len(CONTINUOUS)])
        disc = net[i, len(CONTINUOUS) :]
        if not np.all(np.isin(loss[i], (0.0, 1.0))):
            raise SchemaError(f"{source}: row {i}: loss bits must be 0/1, got {loss[i].tolist()}")
        try:
            out.append(
                GMLabels(
                    continuous={k: float(max(v, 0.0)) for k, v in zip(CONTINUOUS, raw)},
                    discrete={k: float(v) for k, v in zip(DISCRETE_NAMES, disc)},  # type: ignore[misc]
                    loss_types=frozenset(t for t, b in zip(LOSS_TYPES, loss[i]) if b),
                )
            )
        except SchemaError as e:
            raise SchemaError(f"{source}: row {i}: {e}") from None
    return out
