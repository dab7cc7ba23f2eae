"""The training step on the CPU: memory layout, precision and the ensemble, side by side.

One optimizer step of the default preset's FEN+PN (``models.engine.train_one_epoch``'s step:
forward and ``compute_loss`` under the chosen autocast, backward, Adam) on batches of 64 images
at the model's size, in process, with the default preset's torch threads. Contenders: contiguous
NCHW fp32 (what the CPU path ran before), channels-last fp32, channels-last bf16 (what
``--precision auto`` picks on a CPU with oneDNN bf16) and the default preset's two-network
ensemble in that setting. The contenders alternate in rounds and each keeps its best round, so
a noisy neighbour slows all alike. Image content does not change the speed, so batches are
random normalized tensors.

Usage: python benchmarks/bench_step.py [--quick]
"""

from __future__ import annotations

import time
from dataclasses import replace

import common

BATCH = 64


def steps_per_s(model_cfg, channels_last: bool, bf16: bool, steps: int, threads: int) -> float:
    import torch

    from gmparse.models.constraints import ConstraintWeights
    from gmparse.models.engine import autocast_dtype, train_one_epoch
    from gmparse.models.parser import ParsingModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ParsingModel(model_cfg)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    g = torch.Generator().manual_seed(0)
    size = model_cfg.image_size
    batch = {
        "image": torch.randn(BATCH, 3, size, size, generator=g).contiguous(memory_format=layout),
        "continuous": torch.rand(BATCH, 9, generator=g),
        "discrete": torch.zeros(BATCH, 6, dtype=torch.long),
        "loss": torch.zeros(BATCH, 10),
        "group": torch.zeros(BATCH, 3),
    }
    opt = torch.optim.Adam(model.parameters())
    amp = autocast_dtype("bf16" if bf16 else "fp32", "cpu")
    train_one_epoch(model, opt, [batch] * 2, ConstraintWeights(), amp_dtype=amp)  # warm-up
    t0 = time.time()
    train_one_epoch(model, opt, [batch] * steps, ConstraintWeights(), amp_dtype=amp)
    return steps / (time.time() - t0)


def main() -> None:
    t_start = time.time()
    ap = common.base_args(__doc__)
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds, best kept (3; quick 2)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per contender and round (20; quick 8)")
    args = ap.parse_args()
    rounds, steps = args.rounds or (2 if args.quick else 3), args.steps or (8 if args.quick else 20)
    from gmparse.models.engine import cpu_has_bf16
    from gmparse.workflows.lib.job_config import job_config

    cfg = job_config("default")
    single = replace(cfg.model, ensemble=1)
    contenders = [
        ("one network, contiguous NCHW, fp32 (the CPU path before)", single, False, False),
        ("one network, channels-last, fp32", single, True, False),
        ("one network, channels-last, bf16 autocast", single, True, True),
        (f"the default: {cfg.model.ensemble} networks (ensemble), channels-last, bf16 autocast", cfg.model, True, True),
    ]
    best = [0.0] * len(contenders)
    for r in range(rounds):
        for i, (_, m, cl, bf) in enumerate(contenders):
            best[i] = max(best[i], steps_per_s(m, cl, bf, steps, cfg.threads))
        print(f"round {r}: " + ", ".join(f"{b * BATCH:.0f}" for b in best) + " images/s", flush=True)
    base = best[0]
    rows = [[name, s, s * BATCH, s / base] for (name, *_), s in zip(contenders, best)]
    section = common.Section(
        name="step",
        title="Training step on the CPU (memory layout, precision, ensemble)",
        how=(f"Default preset FEN+PN ({single.fen_depth}x{single.fen_width} FEN at {single.image_size}px), batch {BATCH}, "
             f"{cfg.threads} torch threads, in process; {steps} timed steps per contender, {rounds} alternating "
             f"rounds, best kept. oneDNN bf16 on this CPU: {'yes' if cpu_has_bf16() else 'no'}."),
        columns=["step", "steps/s", "images/s", "ratio to contiguous fp32"],
        rows=rows,
        targets=[],
        notes=["An ensemble of K networks trains K networks per step: its images/s is per ensemble, so a ratio near "
               "1 for the default means the two networks cost what one did before."],
    )
    common.finish(section, args, t_start)


if __name__ == "__main__":
    main()
