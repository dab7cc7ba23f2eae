"""Batch inference with Ray Data: a pool of actors each holding the model once.

Used for the folds' test GMs, the final evaluation and ``parse.py`` on many images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data_pipeline.schema import TargetArrays
from models.config import ModelConfig


class PredictBatch:
    """Ray Data actor: normalized image batch -> parser probabilities (+ passthrough columns)."""

    def __init__(self, model_config: ModelConfig, state: dict[str, Any], use_gpu: bool = False):
        import torch

        from models.parser import ParsingModel

        torch.set_num_threads(1)
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model = ParsingModel(model_config)
        self.model.load_state_dict(state)
        self.model.to(self.device).eval()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from models.predictions import Predictions

        with torch.no_grad():
            x = torch.as_tensor(batch["image"], device=self.device)
            p = Predictions.from_outputs(self.model(x))
        out = {k: v for k, v in batch.items() if k != "image"}
        out["pred_continuous"] = p.continuous.astype(np.float32)
        for j, probs in enumerate(p.discrete_probs):
            out[f"pred_discrete_{j}"] = probs.astype(np.float32)
        out["pred_group"] = p.group_prob.astype(np.float32)
        out["pred_loss"] = p.loss_prob.astype(np.float32)
        return out


def predict_dataset(ds, model_config: ModelConfig, state: dict[str, Any], use_gpu: bool = False,
                    batch_size: int = 128, actors: int = 1):
    """-> (Predictions, TargetArrays, gm_ids, image_ids, is_fake) over every row of ``ds``."""
    from models.predictions import Predictions

    c = map_columns(ds, PredictBatch, {"model_config": model_config, "state": state, "use_gpu": use_gpu},
                    batch_size=batch_size, actors=actors, use_gpu=use_gpu)
    n_disc = sum(1 for k in c if k.startswith("pred_discrete_"))
    pred = Predictions(c["pred_continuous"], tuple(c[f"pred_discrete_{j}"] for j in range(n_disc)),
                       c["pred_group"], c["pred_loss"])
    targets = TargetArrays(c["continuous"], c["discrete"], c["loss"], c["group"])
    return pred, targets, c["gm_id"].astype(str), c["image_id"].astype(str), c["is_fake"]


def map_columns(ds, actor: type, kwargs: dict[str, Any], *, batch_size: int, actors: int = 1,
                use_gpu: bool = False) -> dict[str, np.ndarray]:
    """Every row of ``ds`` through a pool of ``actor(**kwargs)`` (one GPU each when used) -> its
    output columns, concatenated in the order Ray Data returns them."""
    import ray.data

    out = ds.map_batches(actor, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format="numpy",
                         compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=1 if use_gpu else 0, num_cpus=1)
    cols: dict[str, list[np.ndarray]] = {}
    for b in out.iter_batches(batch_size=4096, batch_format="numpy"):
        for k, v in b.items():
            cols.setdefault(k, []).append(v)
    if not cols:
        raise RuntimeError("no images to run the model on: the dataset is empty")
    return {k: np.concatenate(v) for k, v in cols.items()}
