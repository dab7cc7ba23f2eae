"""FEN+PN forward throughput (images/s) on this machine, for the default preset's network (the architecture
`make run` registers as gm-parser@champion: ModelConfig.preset("default")) and the paper's.

Usage: python benchmarks/bench_models.py [--batch 32] [--min-time 2] [--sizes 64 128]
Inference mode (eval, no_grad), float32, CPU unless --device is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time

import torch

from gmparse.models import ModelConfig, ParsingModel


def throughput(cfg: ModelConfig, size: int, batch: int, min_time: float, device: str) -> tuple[float, int]:
    """Images per second of one forward pass over [batch, 3, size, size]; repeats until min_time."""
    model = ParsingModel(dataclasses.replace(cfg, image_size=size)).to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    with torch.no_grad():
        model(x)  # warm-up
        n, t0 = 0, time.perf_counter()
        while True:
            model(x)
            n += 1
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t0
            if n >= 2 and elapsed >= min_time:
                return n * batch / elapsed, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--presets", nargs="+", default=["default", "paper"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}  threads {torch.get_num_threads()}  device {args.device}  "
          f"cpu {platform.processor() or platform.machine()}  batch {args.batch}")
    print(f"{'preset':8} {'fen':>7} {'size':>5} {'params':>9} {'img/s':>9} {'iters':>5}")
    for name in args.presets:
        cfg = ModelConfig.preset(name)
        n_params = sum(p.numel() for p in ParsingModel(cfg).parameters())
        for size in args.sizes:
            ips, n = throughput(cfg, size, args.batch, args.min_time, args.device)
            fen = f"{cfg.fen_depth}x{cfg.fen_width}"
            print(f"{name:8} {fen:>7} {size:>5} {n_params:>9,} {ips:>9.1f} {n:>5}", flush=True)


if __name__ == "__main__":
    main()
