"""Predictions as numpy arrays: the common currency of the parser, metrics and workflows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gmparse.data_pipeline.schema import CONTINUOUS, GROUP_NAMES, LOSS_TYPES, NUM_CLASSES, TargetArrays


@dataclass
class Predictions:
    """Per-row (image or GM) parser outputs; probabilities, not hard labels."""

    continuous: np.ndarray  # [n, 9] normalized
    discrete_probs: tuple[np.ndarray, ...]  # 6 x [n, C_j]
    group_prob: np.ndarray  # [n, 3]
    loss_prob: np.ndarray  # [n, 10] (already gated by the group probability)

    def __post_init__(self) -> None:
        n = len(self.continuous)
        self.continuous = np.asarray(self.continuous, dtype=np.float64).reshape(n, len(CONTINUOUS))
        self.discrete_probs = tuple(
            np.asarray(p, dtype=np.float64).reshape(n, c) for p, c in zip(self.discrete_probs, NUM_CLASSES, strict=True)
        )
        self.group_prob = np.asarray(self.group_prob, dtype=np.float64).reshape(n, len(GROUP_NAMES))
        self.loss_prob = np.asarray(self.loss_prob, dtype=np.float64).reshape(n, len(LOSS_TYPES))

    def __len__(self) -> int:
        return len(self.continuous)

    @property
    def discrete(self) -> np.ndarray:
        """Hard class indices [n, 6]."""
        return np.stack([p.argmax(axis=1) for p in self.discrete_probs], axis=1)

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, object]) -> Predictions:
        """A model's forward dict (torch tensors) -> Predictions."""
        import torch

        def np_(t: object) -> np.ndarray:
            assert isinstance(t, torch.Tensor)
            return t.detach().float().cpu().numpy()

        logits: Sequence[object] = outputs["discrete_logits"]  # type: ignore[assignment]
        return cls(
            continuous=np_(outputs["continuous"]),
            discrete_probs=tuple(np_(torch.softmax(lg, dim=1)) for lg in logits),  # type: ignore[arg-type]
            group_prob=np_(outputs["group_prob"]),
            loss_prob=np_(outputs["loss_prob"]),
        )

    @classmethod
    def prior(cls, targets: TargetArrays, n: int) -> Predictions:
        """``n`` copies of the answer that ignores the image: the training GMs' median continuous
        values (the constant with the least L1), their most common class of each discrete value
        and their share of each loss type and group. What a parser scores without reading any
        image, the sanity floor beside random ground truth (which keeps the parser's answers)."""
        cont = np.median(np.asarray(targets.continuous, np.float64), axis=0)
        disc = np.asarray(targets.discrete, np.int64)
        probs = tuple(np.eye(c)[np.bincount(disc[:, j], minlength=c).argmax()] for j, c in enumerate(NUM_CLASSES))
        loss, group = (np.asarray(a, np.float64).mean(axis=0) for a in (targets.loss, targets.group))
        return cls(np.tile(cont, (n, 1)), tuple(np.tile(p, (n, 1)) for p in probs), np.tile(group, (n, 1)),
                   np.tile(loss, (n, 1)))

    def take(self, idx: np.ndarray | Sequence[int]) -> Predictions:
        idx = np.asarray(idx)
        return Predictions(
            self.continuous[idx], tuple(p[idx] for p in self.discrete_probs), self.group_prob[idx], self.loss_prob[idx]
        )

    @classmethod
    def concat(cls, parts: Sequence[Predictions]) -> Predictions:
        return cls(
            np.concatenate([p.continuous for p in parts]),
            tuple(np.concatenate([p.discrete_probs[j] for p in parts]) for j in range(len(NUM_CLASSES))),
            np.concatenate([p.group_prob for p in parts]),
            np.concatenate([p.loss_prob for p in parts]),
        )

    def aggregate(self, gm_ids: Sequence[object] | np.ndarray) -> tuple[np.ndarray, Predictions]:
        """Average rows sharing a GM id: (sorted unique ids, one row per GM)."""
        ids, inv = np.unique(np.asarray(gm_ids), return_inverse=True)
        counts = np.bincount(inv, minlength=len(ids)).astype(np.float64)[:, None]

        def avg(a: np.ndarray) -> np.ndarray:
            out = np.zeros((len(ids), a.shape[1]))
            np.add.at(out, inv, a)
            return out / counts

        return ids, Predictions(
            avg(self.continuous), tuple(avg(p) for p in self.discrete_probs), avg(self.group_prob), avg(self.loss_prob)
        )
