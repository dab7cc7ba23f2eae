"""The console's training progress: worker events through a Ray queue to the driver's display."""

from __future__ import annotations

import io

from gmparse.workflows.lib.progress import FoldProgress, ProgressSender, describe


def test_describe_names_epoch_speed_loss_and_last_validation() -> None:
    assert describe({"epoch": 2.0, "images_per_s": 311.6, "loss": 1.23456}, 12, 0.4567) == \
        "epoch 3/12, 312 img/s, loss 1.235, val 0.457"
    assert describe({"epoch": 0.0}, 4, None) == "epoch 1/4"


def test_worker_events_reach_the_driver_as_one_line_per_epoch(ray_session) -> None:
    import ray

    log = io.StringIO()  # not a terminal: plain lines, as in a log file or `ray job logs`
    with FoldProgress("fold-7", epochs=2, stream=log) as bar:
        @ray.remote(num_cpus=0)
        def worker(q) -> None:  # what rank 0 of the training loop does
            send = ProgressSender(q, min_interval_s=0.0)
            for epoch in range(2):
                send.step(epoch, {"images": 64.0, "loss": 2.0 - epoch, "images_per_s": 100.0})
                send.epoch_done(epoch, {"images_per_s": 100.0, "loss": 1.5 - epoch, "val_score": 0.25 * (epoch + 1)})

        ray.get(worker.remote(bar.queue))
    lines = log.getvalue().splitlines()
    assert [ln.split(",")[0] for ln in lines] == ["fold-7 epoch 1/2", "fold-7 epoch 2/2"]
    assert "loss 1.500, val 0.250" in lines[0] and "loss 0.500, val 0.500" in lines[1]


def test_a_sender_without_a_queue_or_with_a_dead_one_never_stops_training() -> None:
    ProgressSender(None).step(0, {"loss": 1.0})  # no display: nothing to do

    class Gone:
        def put_nowait(self, item) -> None:
            raise ConnectionError("actor died")

    send = ProgressSender(Gone(), min_interval_s=0.0)
    send.epoch_done(0, {"loss": 1.0})
    assert send.queue is None  # stopped sending after the first failure
