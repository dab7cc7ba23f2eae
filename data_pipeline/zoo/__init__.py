"""The GM zoo: sample GM specs, build and briefly train each GM, measure its exact labels.

Pure torch + numpy (no Ray, no MLflow): the collection builder runs ``make_gm`` once per
GM, in one Ray task each.
"""

from __future__ import annotations

from .backbone import ArchSpec, Backbone
from .config import ZOO_PRESETS, ZooTrainConfig
from .grid import sample_grid_png
from .introspect import measure_architecture
from .quality import QualityReference, gate_figures, gate_passes, image_features
from .specs import MIN_COVERING_N, ZOO_FAMILIES, GMSpec, sample_specs
from .train import GMBudgetExceeded, GMResult, make_gm

__all__ = [
    "MIN_COVERING_N",
    "ZOO_FAMILIES",
    "ZOO_PRESETS",
    "ArchSpec",
    "Backbone",
    "GMBudgetExceeded",
    "GMResult",
    "GMSpec",
    "QualityReference",
    "ZooTrainConfig",
    "gate_figures",
    "gate_passes",
    "image_features",
    "make_gm",
    "measure_architecture",
    "sample_grid_png",
    "sample_specs",
]
