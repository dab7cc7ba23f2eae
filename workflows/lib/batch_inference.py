"""Batch inference with Ray Data: one actor class (``BatchActor``) for every job, a pool of them
each holding its predictor once.

A predictor is any ``batch dict -> batch dict`` callable, built inside the actor from a picklable
factory (``functools.partial``): ``PredictBatch`` here (the parser on decoded images: the folds'
test GMs, Tune's validation GMs), ``heads_training.EvalBatch`` (forensics) and
``parse.ImagePredictor`` (image files).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from gmparse.data_pipeline.schema import TargetArrays
from gmparse.models.config import ModelConfig
from gmparse.models.inputs import model_input

Batch = dict[str, np.ndarray]


class BatchActor:
    """The Ray Data actor of every batch-inference job: builds its predictor once (``make()``,
    with one torch thread per actor: the pool gives the parallelism), then maps batches through it."""

    def __init__(self, make: Callable[[], Callable[[Batch], Batch]], threads: int = 1):
        import torch

        torch.set_num_threads(threads)
        self.predict = make()

    def __call__(self, batch: Batch) -> Batch:
        return self.predict(batch)


def actor_pool(ds, make: Callable[[], Callable[[Batch], Batch]], *, batch_size: int, actors: int = 1,
               use_gpu: bool = False):
    """``ds`` mapped through a pool of ``actors`` BatchActors (one GPU each when used), lazily."""
    import ray.data

    return ds.map_batches(BatchActor, fn_constructor_kwargs={"make": make}, batch_size=batch_size,
                          batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
                          num_gpus=1 if use_gpu else 0, num_cpus=1)


class PredictBatch:
    """Predictor: uint8 image batch (image_dataset rows) -> parser probabilities (+ passthrough columns)."""

    def __init__(self, model_config: ModelConfig, state: dict[str, Any], use_gpu: bool = False):
        import torch

        from gmparse.models.parser import ParsingModel

        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model = ParsingModel(model_config)
        self.model.load_state_dict(state)
        self.model.to(self.device).eval()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from gmparse.models.predictions import Predictions

        with torch.no_grad():
            x = model_input(torch.as_tensor(batch["image"]), self.device)
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
    from gmparse.models.predictions import Predictions

    c = map_columns(ds, partial(PredictBatch, model_config, state, use_gpu), batch_size=batch_size, actors=actors,
                    use_gpu=use_gpu)
    n_disc = sum(1 for k in c if k.startswith("pred_discrete_"))
    pred = Predictions(c["pred_continuous"], tuple(c[f"pred_discrete_{j}"] for j in range(n_disc)),
                       c["pred_group"], c["pred_loss"])
    targets = TargetArrays(c["continuous"], c["discrete"], c["loss"], c["group"])
    return pred, targets, c["gm_id"].astype(str), c["image_id"].astype(str), c["is_fake"]


def map_columns(ds, make: Callable[[], Callable[[Batch], Batch]], *, batch_size: int, actors: int = 1,
                use_gpu: bool = False) -> dict[str, np.ndarray]:
    """Every row of ``ds`` through an actor pool of ``make()`` predictors -> their output columns,
    concatenated in the order Ray Data returns them."""
    out = actor_pool(ds, make, batch_size=batch_size, actors=actors, use_gpu=use_gpu)
    cols: dict[str, list[np.ndarray]] = {}
    for b in out.iter_batches(batch_size=4096, batch_format="numpy"):
        for k, v in b.items():
            cols.setdefault(k, []).append(v)
    if not cols:
        raise RuntimeError("no images to run the model on: the dataset is empty")
    return {k: np.concatenate(v) for k, v in cols.items()}
