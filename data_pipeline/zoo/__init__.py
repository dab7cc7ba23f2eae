"""The GM zoo: sample GM specs, build and briefly train each GM, measure its exact labels.

Pure torch + numpy (no Ray, no MLflow): the collection builder runs ``make_gm`` once per
GM, in one Ray task each. The names below load on first use (PEP 562), so the torch-free
``zoo.config`` (presets and modes a build's configuration checks) imports without torch.
"""

from __future__ import annotations

from gmparse.data_pipeline.lazy_exports import lazy_exports

#: public name -> the submodule that defines it
_WHERE = {
    "ArchSpec": "backbone",
    "Backbone": "backbone",
    "ZOO_PRESETS": "config",
    "ZooTrainConfig": "config",
    "sample_grid_png": "grid",
    "measure_architecture": "introspect",
    "QualityReference": "quality",
    "gate_figures": "quality",
    "gate_passes": "quality",
    "image_features": "quality",
    "MIN_COVERING_N": "specs",
    "ZOO_FAMILIES": "specs",
    "GMSpec": "specs",
    "sample_specs": "specs",
    "GMBudgetExceeded": "train",
    "GMResult": "train",
    "make_gm": "train",
}
__all__ = [  # the same names as _WHERE
    "ArchSpec",
    "Backbone",
    "GMBudgetExceeded",
    "GMResult",
    "GMSpec",
    "MIN_COVERING_N",
    "QualityReference",
    "ZOO_FAMILIES",
    "ZOO_PRESETS",
    "ZooTrainConfig",
    "gate_figures",
    "gate_passes",
    "image_features",
    "make_gm",
    "measure_architecture",
    "sample_grid_png",
    "sample_specs",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, globals())
