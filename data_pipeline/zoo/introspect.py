"""Measure the 15 RED116 architecture values by walking a built torch module.

Counts (over ``module.named_modules()``, whose registration order the zoo keeps equal to
forward order; each module object counted once):

* ``num_conv_layers``: convolutions, i.e. ``nn.Conv1d/2d/3d`` and transposed convolutions
  (subclasses such as the causal conv included).
* ``num_fc_layers``: ``nn.Linear`` layers, including the style FC inside each AdaIN.
* ``num_pool_layers``: pooling layers (max / average / adaptive, any dimension).
* ``num_norm_layers``: batch, instance, group, layer norms and AdaIN (an AdaIN counts once).
* ``num_layers``: parametric weight layers, ``num_conv_layers + num_fc_layers`` (the
  VGG convention: "VGG-16" has 13 conv + 3 FC); norms, pooling and activations excluded.
* ``num_filters``: sum of the output channels of all convolutional layers.
* ``num_blocks``: :class:`Block` instances (a block nested in a block is not recounted).
* ``layers_per_block``: convolutional layers inside a block, maximum over blocks
  (including a 1x1 skip projection); 0 without blocks.
* ``num_params``: trainable parameters (``requires_grad``) of the module.

Discrete values:

* ``norm_type``: the most frequent normalization kind (ties: schema order); "none"
  without normalization layers.
* ``last_layer_nonlinearity``: the last activation module (ReLU, Tanh, LeakyReLU, Sigmoid)
  in forward order.
* ``last_block_nonlinearity``: the last activation inside the last Block; without
  blocks, the last activation before the final one (the last hidden layer's).
* ``upsampling``: ``transposed_conv`` when transposed convolutions outnumber up-sampling
  modules, else ``nearest``; a network without up-sampling gets class 0 (``nearest``),
  as the schema has no "none" class.
* ``skip_connection``: ``yes`` iff a :class:`SkipConnection` module is present.
* ``downsampling``: ``yes`` iff a convolution with stride > 1 or a pooling layer is present.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from gmparse.data_pipeline.schema import CONTINUOUS, DISCRETE, LOSS_TYPES, NONLINEARITIES, GMLabels

from .layers import AdaIN, Block, SkipConnection

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
TRANSPOSED_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
POOL_TYPES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
#: normalization kinds in schema class order; GroupNorm/LayerNorm count as layers only
NORM_KINDS: dict[str, tuple[type[nn.Module], ...]] = {
    "batch": (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d),
    "instance": (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d),
    "adaptive_instance": (AdaIN,),
}
OTHER_NORMS = (nn.GroupNorm, nn.LayerNorm)
ACTIVATIONS: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.Tanh: "tanh",
    nn.LeakyReLU: "leaky_relu",
    nn.Sigmoid: "sigmoid",
}
assert set(ACTIVATIONS.values()) == set(NONLINEARITIES)


def _act_name(m: nn.Module) -> str | None:
    for cls, name in ACTIVATIONS.items():
        if isinstance(m, cls):
            return name
    return None


def _class(name: str, value: str) -> int:
    return DISCRETE[name].index(value)


def measure_architecture(module: nn.Module, loss_types: Iterable[str]) -> GMLabels:
    """The GM's labels, measured from ``module`` (see the module docstring for definitions).

    Raises ValueError for a module without any activation (no non-linearity to report) or
    for an unknown loss type.
    """
    loss_types = frozenset(loss_types)
    unknown = loss_types - set(LOSS_TYPES)
    if unknown:
        raise ValueError(f"unknown loss types {sorted(unknown)}; known: {list(LOSS_TYPES)}")
    mods = [m for _, m in module.named_modules()]
    convs = [m for m in mods if isinstance(m, CONV_TYPES)]
    n_fc = sum(isinstance(m, nn.Linear) for m in mods)
    pools = [m for m in mods if isinstance(m, POOL_TYPES)]
    norm_counts = {k: sum(isinstance(m, types) for m in mods) for k, types in NORM_KINDS.items()}
    n_norm = sum(norm_counts.values()) + sum(isinstance(m, OTHER_NORMS) for m in mods)

    blocks = [m for m in mods if isinstance(m, Block)]
    outer = [b for b in blocks if not any(b is not o and b in list(o.modules()) for o in blocks)]
    lpb = max((sum(isinstance(m, CONV_TYPES) for m in b.modules()) for b in outer), default=0)

    acts = [(m, _act_name(m)) for m in mods]
    acts = [(m, n) for m, n in acts if n is not None]
    if not acts:
        raise ValueError("module has no activation (ReLU/Tanh/LeakyReLU/Sigmoid) to report")
    last_layer = acts[-1][1]
    if blocks:
        block_acts = [n for m, n in ((m, _act_name(m)) for m in blocks[-1].modules()) if n is not None]
        last_block = block_acts[-1] if block_acts else last_layer
    else:
        last_block = acts[-2][1] if len(acts) > 1 else last_layer

    n_transposed = sum(isinstance(m, TRANSPOSED_TYPES) for m in convs)
    n_upsample = sum(isinstance(m, nn.Upsample) for m in mods)
    strided = any(
        not isinstance(m, TRANSPOSED_TYPES) and max(m.stride) > 1 for m in convs  # type: ignore[arg-type]
    )
    n_norm_kinds = max(norm_counts.values())
    norm_type = (
        "none" if n_norm_kinds == 0 else next(k for k, v in norm_counts.items() if v == n_norm_kinds)
    )
    continuous = {
        "num_layers": len(convs) + n_fc,
        "num_conv_layers": len(convs),
        "num_fc_layers": n_fc,
        "num_pool_layers": len(pools),
        "num_norm_layers": n_norm,
        "num_filters": sum(int(m.out_channels) for m in convs),
        "num_blocks": len(outer),
        "layers_per_block": lpb,
        "num_params": sum(p.numel() for p in module.parameters() if p.requires_grad),
    }
    assert set(continuous) == set(CONTINUOUS)
    discrete = {
        "norm_type": _class("norm_type", norm_type),
        "last_layer_nonlinearity": _class("last_layer_nonlinearity", last_layer),
        "last_block_nonlinearity": _class("last_block_nonlinearity", last_block),
        "upsampling": _class("upsampling", "transposed_conv" if n_transposed > n_upsample else "nearest"),
        "skip_connection": _class("skip_connection", "yes" if any(isinstance(m, SkipConnection) for m in mods) else "no"),
        "downsampling": _class("downsampling", "yes" if strided or pools else "no"),
    }
    return GMLabels(continuous={k: float(v) for k, v in continuous.items()}, discrete=discrete, loss_types=loss_types)
