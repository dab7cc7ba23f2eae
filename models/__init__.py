"""gmparse models: FEN, fingerprint constraints, Parsing Network, heads, losses and metrics.

Pure torch (+ numpy / scikit-learn for metrics); no Ray or MLflow here. The names below load on
first use (PEP 562), so ``gmparse.models.config`` (the dataclasses an entry point's ``--help``
needs) imports without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gmparse.data_pipeline.lazy_exports import lazy_exports

#: public name -> the submodule that defines it
_WHERE = {
    "ModelConfig": "config",
    "ConstraintWeights": "config",
    "constraint_loss": "constraints",
    "constraint_terms": "constraints",
    "FEN": "fen",
    "DetectionAttributionModel": "heads",
    "ShallowHead": "heads",
    "heads_loss": "heads",
    "compute_loss": "losses",
    "targets_to_tensors": "losses",
    "attribution_metrics": "metrics",
    "detection_metrics": "metrics",
    "evaluate_parsing": "metrics",
    "metric_table": "metrics",
    "parsing_metrics": "metrics",
    "parsing_score": "metrics",
    "Parser": "parser",
    "ParsingModel": "parser",
    "prepare_images": "parser",
    "ParsingNetwork": "pn",
    "class_weights": "pn",
    "fit_clusters": "pn",
    "Predictions": "predictions",
}
__all__ = [  # the same names as _WHERE (tests/test_models.py checks)
    "ConstraintWeights",
    "DetectionAttributionModel",
    "FEN",
    "ModelConfig",
    "Parser",
    "ParsingModel",
    "ParsingNetwork",
    "Predictions",
    "ShallowHead",
    "attribution_metrics",
    "class_weights",
    "compute_loss",
    "constraint_loss",
    "constraint_terms",
    "detection_metrics",
    "evaluate_parsing",
    "fit_clusters",
    "heads_loss",
    "metric_table",
    "parsing_metrics",
    "parsing_score",
    "prepare_images",
    "targets_to_tensors",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, globals())


if TYPE_CHECKING:
    from .config import ConstraintWeights, ModelConfig
    from .constraints import constraint_loss, constraint_terms
    from .fen import FEN
    from .heads import DetectionAttributionModel, ShallowHead, heads_loss
    from .losses import compute_loss, targets_to_tensors
    from .metrics import (
        attribution_metrics,
        detection_metrics,
        evaluate_parsing,
        metric_table,
        parsing_metrics,
        parsing_score,
    )
    from .parser import Parser, ParsingModel, prepare_images
    from .pn import ParsingNetwork, class_weights, fit_clusters
    from .predictions import Predictions
