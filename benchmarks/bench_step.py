"""The training step on the CPU: memory layout, precision, the ensemble and its members in threads,
beside this CPU's matmul ceiling.

One optimizer step of the default preset's FEN+PN (``models.engine.train_one_epoch``'s step:
forward and ``compute_loss`` under the chosen autocast, backward, Adam) on batches of 64 images
at the model's size, in process, with the default preset's torch threads. Contenders: contiguous
NCHW fp32 (what the CPU path ran before), channels-last fp32, channels-last bf16 (what
``--precision auto`` picks on a CPU with oneDNN bf16; skipped where bf16 would be emulated), and
the default preset's two-network ensemble under ``--precision auto``, its members one after the
other (the step before) and side by side in threads (``engine.member_threads``, the step now).
The contenders alternate in rounds and each keeps its best round, so a noisy neighbour slows all
alike. Image content does not change the speed, so batches are random normalized tensors.

Ceiling: a 2048x2048 matmul in the step's precision on the same threads. The step's GFLOP/s
counts its forward and backward FLOPs with ``torch.utils.flop_counter``.

Usage: python benchmarks/bench_step.py [--quick]
"""

from __future__ import annotations

import time
from dataclasses import replace

import common

BATCH = 64


def _batch(size: int, channels_last: bool):
    import torch

    layout = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(BATCH, 3, size, size, generator=g).contiguous(memory_format=layout),
        "continuous": torch.rand(BATCH, 9, generator=g),
        "discrete": torch.zeros(BATCH, 6, dtype=torch.long),
        "loss": torch.zeros(BATCH, 10),
        "group": torch.zeros(BATCH, 3),
    }


def steps_per_s(model_cfg, channels_last: bool, amp, steps: int, threads: int, parallel: bool = False) -> float:
    import torch

    from gmparse.models.constraints import ConstraintWeights
    from gmparse.models.engine import train_one_epoch
    from gmparse.models.parser import ParsingModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ParsingModel(model_cfg)
    model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    batch = _batch(model_cfg.image_size, channels_last)
    opt = torch.optim.Adam(model.parameters())
    run = dict(amp_dtype=amp, parallel_members=parallel)
    train_one_epoch(model, opt, [batch] * 2, ConstraintWeights(), **run)  # warm-up
    t0 = time.time()
    train_one_epoch(model, opt, [batch] * steps, ConstraintWeights(), **run)
    return steps / (time.time() - t0)


def flops_per_image(model_cfg) -> float:
    """Forward + backward FLOPs of one training step, per image (torch's counter: convolutions and matmuls)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gmparse.models.constraints import ConstraintWeights
    from gmparse.models.losses import compute_loss
    from gmparse.models.parser import ParsingModel

    model = ParsingModel(model_cfg).to(memory_format=torch.channels_last)
    batch = _batch(model_cfg.image_size, True)
    with FlopCounterMode(display=False) as counter:
        loss, _ = compute_loss(model(batch["image"]), {k: v for k, v in batch.items() if k != "image"},
                               ConstraintWeights())
        loss.backward()
    return counter.get_total_flops() / BATCH


def matmul_gflops(amp, threads: int, n: int = 2048, reps: int = 10) -> float:
    """This CPU's matmul ceiling in the step's precision (bf16 where autocast runs, else fp32)."""
    import torch

    torch.set_num_threads(threads)
    dtype = amp or torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best = 0.0
    for _ in range(3):
        t0 = time.time()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.time() - t0) / 1e9)
    return best


def main() -> None:
    t_start = time.time()
    ap = common.base_args(__doc__)
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds, best kept (3; quick 2)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per contender and round (20; quick 8)")
    args = ap.parse_args()
    rounds, steps = args.rounds or (2 if args.quick else 3), args.steps or (8 if args.quick else 20)
    import torch

    from gmparse.models.engine import autocast_dtype, cpu_has_bf16
    from gmparse.workflows.lib.job_config import job_config

    cfg = job_config("default")
    single = replace(cfg.model, ensemble=1)
    auto = autocast_dtype(cfg.precision, "cpu")
    auto_name = "bf16 autocast" if auto is not None else "fp32 (no oneDNN bf16 here)"
    ens = f"the default: {cfg.model.ensemble} networks (ensemble), channels-last, {auto_name}"
    contenders = [
        ("one network, contiguous NCHW, fp32 (the CPU path before)", single, False, None, False),
        ("one network, channels-last, fp32", single, True, None, False),
        *([("one network, channels-last, bf16 autocast", single, True, torch.bfloat16, False)] if cpu_has_bf16() else []),
        (f"{ens}, members one after the other (before)", cfg.model, True, auto, False),
        (f"{ens}, members side by side in threads (now)", cfg.model, True, auto, True),
    ]
    best = [0.0] * len(contenders)
    for r in range(rounds):
        for i, (_, m, cl, amp, par) in enumerate(contenders):
            best[i] = max(best[i], steps_per_s(m, cl, amp, steps, cfg.threads, par))
        print(f"round {r}: " + ", ".join(f"{b * BATCH:.0f}" for b in best) + " images/s", flush=True)
    ceiling = matmul_gflops(auto, cfg.threads)
    flops = {id(single): flops_per_image(single), id(cfg.model): flops_per_image(cfg.model)}
    base = best[0]
    rows = []
    for (name, m, *_), s in zip(contenders, best):
        gflops = s * BATCH * flops[id(m)] / 1e9
        rows.append([name, s, s * BATCH, s / base, gflops, gflops / ceiling])
    rows.append([f"ceiling: {2048}x{2048} matmul, {'bf16' if auto is not None else 'fp32'}, {cfg.threads} threads",
                 None, None, None, ceiling, 1.0])
    before, now = best[-2], best[-1]
    section = common.Section(
        name="step",
        title="Training step on the CPU (memory layout, precision, ensemble, members in threads)",
        how=(f"Default preset FEN+PN ({single.fen_depth}x{single.fen_width} FEN at {single.image_size}px), batch {BATCH}, "
             f"{cfg.threads} torch threads, in process; {steps} timed steps per contender, {rounds} alternating "
             f"rounds, best kept. oneDNN bf16 on this CPU: {'yes' if cpu_has_bf16() else 'no'}. FLOPs per image "
             f"(forward + backward, torch.utils.flop_counter): one network {flops[id(single)] / 1e9:.3f} G, the "
             f"default {flops[id(cfg.model)] / 1e9:.3f} G."),
        columns=["step", "steps/s", "images/s", "ratio to contiguous fp32", "GFLOP/s", "share of the matmul ceiling"],
        rows=rows,
        targets=[common.Target("default step, members in threads vs one after the other (images/s)", now / before,
                               ">= 2.0", now / before >= 2.0)],
        notes=["An ensemble of K networks trains K networks per step: its images/s is per ensemble.",
               "Members in threads: each member's forward and backward on its own thread with a share of the torch "
               "threads; the same gradients (tests/test_models.py), so the same results."],
    )
    common.finish(section, args, t_start)


if __name__ == "__main__":
    main()
