"""gmparse models: FEN, fingerprint constraints, Parsing Network, heads, losses and metrics.

Pure torch (+ numpy / scikit-learn for metrics); no Ray or MLflow here.
"""

from .config import ModelConfig
from .constraints import ConstraintWeights, constraint_loss, constraint_terms
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

__all__ = [
    "FEN",
    "ConstraintWeights",
    "DetectionAttributionModel",
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
