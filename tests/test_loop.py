"""The one training loop (workflows.lib.train_loop) on a toy task: what it keeps, what it reports, how it resumes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from gmparse.workflows.lib.train_loop import LoopConfig, fit

SCORES = (0.1, 0.9, 0.3, 0.2)  # the toy's validation score after its 1st, 2nd, ... epoch


class Counter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.register_buffer("epochs", torch.zeros(()))


@dataclasses.dataclass(frozen=True)
class ToyTask:
    def build(self):
        return {"toy": Counter()}

    def train_epoch(self, models, optimizers, emas, batches, device, on_step):
        m, n = models["toy"], 0
        for batch in batches:
            loss = (m.w * batch["x"].float()).pow(2).mean()
            optimizers["toy"].zero_grad()
            loss.backward()
            optimizers["toy"].step()
            n += len(batch["x"])
        m.epochs += 1
        return {"toy/train/loss": float(loss), "loss": float(loss), "images_per_s": float(n)}

    def evaluate(self, models, device):
        return {"toy/val_score": SCORES[int(models["toy"].epochs) - 1]}

    def score(self, metrics, name):
        return metrics[f"{name}/val_score"]


@pytest.mark.slow
def test_loop_keeps_the_best_or_the_last_epoch_and_resumes(ray_session, tmp_path) -> None:
    import sys

    import ray.cloudpickle
    import ray.data

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import a test module
    data = {"train": ray.data.from_items([{"x": float(i)} for i in range(16)])}
    args = {"storage_path": str(tmp_path), "num_workers": 1, "use_gpu": False, "cpus_per_worker": 1,
            "keep_checkpoints": 1, "max_failures": 0}
    loop = LoopConfig(epochs=3, batch_size=4, lr=0.01, keep="best")
    best = fit(ToyTask(), loop, "best", data, **args)
    assert best.best_epochs == {"toy": 1} and float(best.states["toy"]["epochs"]) == 2  # score 0.9
    assert [h["epoch"] for h in best.history] == [0, 1, 2] and best.history[1]["toy/val_score"] == 0.9
    last = fit(ToyTask(), dataclasses.replace(loop, keep="last"), "last", data, **args)
    assert last.best_epochs == {"toy": 2} and float(last.states["toy"]["epochs"]) == 3
    # the same name again, one more epoch: it resumes from the checkpoint and trains only epoch 3
    more = fit(ToyTask(), dataclasses.replace(loop, keep="last", epochs=4), "last", data, **args)
    assert [h["epoch"] for h in more.history] == [0, 1, 2, 3] and float(more.states["toy"]["epochs"]) == 4


def test_loop_config_refuses_an_unknown_keep_policy() -> None:
    with pytest.raises(ValueError, match="keep"):
        LoopConfig(epochs=1, batch_size=1, lr=0.1, keep="median")


@dataclasses.dataclass(frozen=True)
class OrderTask(ToyTask):
    """Trains nothing; reports a positional checksum of the rows each epoch saw, in order."""

    def train_epoch(self, models, optimizers, emas, batches, device, on_step):
        seen = [float(v) for b in batches for v in b["x"]]
        return {"order": float(sum((i + 1) * v for i, v in enumerate(seen))), "rows": float(len(seen)),
                "loss": 0.0, "images_per_s": 0.0}

    def evaluate(self, models, device):
        return {"toy/val_score": 0.0}


def _jitter(batch):  # map tasks that finish out of order, as decode tasks on a busy machine do
    import random
    import time

    time.sleep(random.random() * 0.05)
    return batch


@pytest.mark.slow
def test_loop_draws_the_same_epochs_in_every_run(ray_session, tmp_path) -> None:
    """A cached training set (epoch_plan) read through Ray Train, with a map on top as fit_fold's
    select_columns: two runs of the same seed see the same rows in the same order every epoch,
    a fresh sample of the asked size each epoch."""
    import sys

    import ray.cloudpickle
    import ray.data

    from gmparse.data_pipeline.ray_data import epoch_plan

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cached = ray.data.range(600, override_num_blocks=30).map_batches(
        lambda b: {"x": b["id"].astype("float32")}).materialize()
    ds, plan = epoch_plan(cached, cached=True, seed=0, fraction=0.5, batch_size=10, num_workers=1)
    loop = LoopConfig(epochs=3, batch_size=10, lr=0.01, plan=plan)
    args = {"storage_path": str(tmp_path), "num_workers": 1, "use_gpu": False, "cpus_per_worker": 1,
            "keep_checkpoints": 1, "max_failures": 0}
    runs = [fit(OrderTask(), loop, name, {"train": ds.map_batches(_jitter)}, **args).history for name in ("a", "b")]
    assert [h["order"] for h in runs[0]] == [h["order"] for h in runs[1]]
    assert all(h["rows"] == plan.steps * 10 == 300 for h in runs[0])
    assert len({h["order"] for h in runs[0]}) == 3  # a new sample each epoch
