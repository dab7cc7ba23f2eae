"""The training loss: parsing terms (x10, docs/method.md) plus the weighted fingerprint constraints.

``compute_loss`` is what the Ray Train loop calls; it returns the differentiable total
and a dict of plain floats for logging, so the loop never needs to know the terms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gmparse.data_pipeline.schema import NUM_CLASSES, TargetArrays

from .constraints import ConstraintWeights, constraint_loss
from .pn import assign_clusters

#: parsing losses are weighted x10 against the constraints (docs/method.md)
PARSING_SCALE = 10.0
_EPS = 1e-6


def targets_to_tensors(
    targets: TargetArrays, index: Sequence[int] | np.ndarray | None = None, device: torch.device | str | None = None
) -> dict[str, torch.Tensor]:
    """TargetArrays rows (e.g. each image's GM row) -> per-image target tensors.

    ``index`` picks rows (one per image, repeats allowed); None takes all rows in order.
    """
    idx = slice(None) if index is None else np.asarray(index, dtype=np.int64)
    return {
        "continuous": torch.as_tensor(np.asarray(targets.continuous)[idx], dtype=torch.float32, device=device),
        "discrete": torch.as_tensor(np.asarray(targets.discrete)[idx], dtype=torch.long, device=device),
        "loss": torch.as_tensor(np.asarray(targets.loss)[idx], dtype=torch.float32, device=device),
        "group": torch.as_tensor(np.asarray(targets.group)[idx], dtype=torch.float32, device=device),
    }


def _regression(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "mse":
        return F.mse_loss(pred, target)
    raise ValueError(f"continuous_loss must be 'l1' or 'mse', got {kind!r}")


def parsing_terms(
    outputs: Mapping[str, object],
    targets: Mapping[str, torch.Tensor],
    class_weights: Sequence[torch.Tensor] | None = None,
    continuous_loss: str = "l1",
    binary_weights: Mapping[str, torch.Tensor] | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Unscaled parsing losses: continuous (or cluster CE + deviation), discrete CE, group and loss BCE.

    ``binary_weights`` (``pn.binary_weights``) weighs each group / loss-type label by its class.
    ``label_smoothing`` softens the discrete values' CE targets (``F.cross_entropy``'s; 0: the paper).
    """
    terms: dict[str, torch.Tensor] = {}
    cont_t = targets["continuous"].float()
    if "cluster_logits" in outputs:
        centres: torch.Tensor = outputs["centres"]  # type: ignore[assignment]
        cluster_t = assign_clusters(cont_t, centres)
        terms["cluster"] = F.cross_entropy(outputs["cluster_logits"].float(), cluster_t)  # type: ignore[union-attr]
        dev_t = cont_t - centres[cluster_t]
        terms["continuous"] = _regression(outputs["deviation"].float(), dev_t, continuous_loss)  # type: ignore[union-attr]
    else:
        terms["continuous"] = _regression(outputs["continuous"].float(), cont_t, continuous_loss)  # type: ignore[union-attr]
    logits: Sequence[torch.Tensor] = outputs["discrete_logits"]  # type: ignore[assignment]
    disc_t = targets["discrete"]
    ce = []
    for j, lg in enumerate(logits):
        w = None if class_weights is None else class_weights[j].to(lg.device)
        ce.append(F.cross_entropy(lg.float(), disc_t[:, j], weight=w, label_smoothing=label_smoothing))
    terms["discrete"] = torch.stack(ce).mean()
    group_t, loss_t = targets["group"].float(), targets["loss"].float()
    terms["group"] = F.binary_cross_entropy_with_logits(
        outputs["group_logits"].float(), group_t, weight=_label_weight(binary_weights, "group", group_t))  # type: ignore[union-attr]
    loss_prob = outputs["loss_prob"].float().clamp(_EPS, 1 - _EPS)  # type: ignore[union-attr]
    terms["loss_type"] = F.binary_cross_entropy(loss_prob, loss_t, weight=_label_weight(binary_weights, "loss", loss_t))
    return terms


def _label_weight(binary_weights: Mapping[str, torch.Tensor] | None, key: str, target: torch.Tensor) -> torch.Tensor | None:
    """Per-element weight [B, n] of a 0/1 target from the [2, n] (negative, positive) weights."""
    if binary_weights is None:
        return None
    w = binary_weights[key].to(target.device)
    return torch.where(target > 0.5, w[1], w[0])


def compute_loss(
    model_outputs: Mapping[str, object],
    targets: Mapping[str, torch.Tensor],
    weights: ConstraintWeights | None = None,
    class_weights: Sequence[torch.Tensor] | None = None,
    continuous_loss: str = "l1",
    parsing_scale: float = PARSING_SCALE,
    binary_weights: Mapping[str, torch.Tensor] | None = None,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total = parsing_scale * sum(parsing terms) + weighted constraints (if a fingerprint is given).

    Returns the total (differentiable) and named floats: each parsing term, ``parsing``,
    each unweighted constraint as ``constraint/<name>``, ``constraints`` and ``total``. An
    ensemble's outputs (with ``members``): the sum of its members' totals, each term logged as
    the members' mean.
    """
    if class_weights is not None and len(class_weights) != len(NUM_CLASSES):
        raise ValueError(f"need {len(NUM_CLASSES)} class-weight tensors, got {len(class_weights)}")
    members = model_outputs.get("members")
    if members is not None:  # an ensemble: every member trains on its own loss, as it would alone
        parts = [compute_loss(m, targets, weights, class_weights, continuous_loss, parsing_scale, binary_weights,
                              label_smoothing) for m in members]  # type: ignore[union-attr]
        total = torch.stack([t for t, _ in parts]).sum()
        return total, {k: float(np.mean([log[k] for _, log in parts])) for k in parts[0][1]}  # member mean
    terms = parsing_terms(model_outputs, targets, class_weights, continuous_loss, binary_weights, label_smoothing)
    parsing = torch.stack(list(terms.values())).sum()
    total = parsing_scale * parsing
    log = {k: float(v.detach()) for k, v in terms.items()}
    log["parsing"] = float(parsing.detach())
    fp = model_outputs.get("fingerprint")
    if fp is not None:
        c_total, c_terms = constraint_loss(fp.float(), weights or ConstraintWeights())  # type: ignore[union-attr]
        total = total + c_total
        log.update({f"constraint/{k}": float(v.detach()) for k, v in c_terms.items()})
        log["constraints"] = float(c_total.detach())
    log["total"] = float(total.detach())
    return total, log
