"""Inference: ``models.parser.Parser.predict`` on uint8 images, batch throughput and latency.

For the default preset's network (ModelConfig.preset("default"), the architecture `make run` registers as
gm-parser@champion) and the paper's, at 64 and 128 px: images/s of ``predict`` on a batch of
uint8 [N,S,S,3] images (preprocessing, FEN+PN in eval/no_grad, and the named outputs included),
the forward pass alone on float tensors (``bench_models.throughput``, the colleague's benchmark)
for comparison, and single-image latency p50/p95 of ``predict`` on one image. CPU with one torch
thread and with all cores; on a GPU too when ``torch.cuda.is_available()``.

Usage: python benchmarks/bench_inference.py [--quick] [--sizes 64 128] [--presets default paper]
"""

from __future__ import annotations

import dataclasses
import time

import common


def make_parser(preset: str, size: int, device: str):
    import numpy as np

    from gmparse.data_pipeline.schema import CONTINUOUS, Ranges
    from gmparse.models.config import ModelConfig
    from gmparse.models.parser import Parser, ParsingModel

    ranges = Ranges.from_pairs({c: (0.0, 1.0) for c in CONTINUOUS})
    model = ParsingModel(dataclasses.replace(ModelConfig.preset(preset), image_size=size)).to(device).eval()
    parser = Parser(model, ranges)
    rng = np.random.default_rng(0)
    return parser, rng


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def batch_rate(parser, images, device: str, min_time: float) -> float:
    parser.predict(images[: max(1, len(images) // 4)])  # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        parser.predict(images)
        sync(device)
        n += 1
        el = time.perf_counter() - t0
        if n >= 2 and el >= min_time or el >= 4 * min_time:
            return n * len(images) / el


def latencies(parser, image, device: str, count: int, min_time: float) -> list[float]:
    parser.predict(image)
    out, t_end = [], time.perf_counter() + min_time
    while len(out) < count or (time.perf_counter() < t_end and len(out) < 20 * count):
        t0 = time.perf_counter()
        parser.predict(image)
        sync(device)
        out.append(time.perf_counter() - t0)
        if len(out) >= 3 and time.perf_counter() > t_end + 3 * min_time:
            break
    return out


def main() -> None:
    t_start = time.time()
    ap = common.base_args(__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--presets", nargs="+", default=["default", "paper"])
    ap.add_argument("--batch", type=int, default=None, help="images per predict call (64; quick 16)")
    ap.add_argument("--min-time", type=float, default=None, help="seconds per measurement (3; quick 0.7)")
    args = ap.parse_args()
    import numpy as np
    import torch
    from bench_models import throughput

    batch = args.batch or (16 if args.quick else 64)
    min_time = args.min_time or (0.7 if args.quick else 3.0)
    lat_count = 5 if args.quick else 50
    cores = common.n_cores()
    setups = [("cpu", 1)] + ([("cpu", cores)] if cores > 1 and not args.quick else [])  # quick: 1 thread
    if torch.cuda.is_available():
        setups.append(("cuda", 1))
    rows = []
    for device, threads in setups:
        torch.set_num_threads(threads)
        label = f"{device}, {threads} thread{'s' if threads > 1 else ''}" if device == "cpu" else (
            f"cuda ({torch.cuda.get_device_name(0)})")
        for preset in args.presets:
            for size in args.sizes:
                parser, rng = make_parser(preset, size, device)
                # the paper model at 128 px on one CPU thread is slow: fewer images per call there
                n = batch if device != "cpu" or preset != "paper" else max(4, batch // (4 if size >= 128 else 2))
                images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
                ips = batch_rate(parser, images, device, min_time)
                fwd, _ = throughput(parser.config, size, n, min_time / 2, device)
                lat = latencies(parser, images[:1], device, lat_count, min_time)
                rows.append([label, preset, size, n, ips, fwd, ips / fwd, 1000 * common.percentile(lat, 50),
                             1000 * common.percentile(lat, 95), len(lat)])
                print(f"{label} {preset} {size}: {ips:.1f} img/s, p50 {rows[-1][7]:.1f} ms", flush=True)
    notes = ["no CUDA device here: GPU rows are measured when torch.cuda.is_available()"] if not torch.cuda.is_available() else []
    notes.append("predict/forward < 1 is the cost of uint8 -> resize/normalize and the named outputs around the model.")
    section = common.Section(
        name="inference",
        title="Inference (Parser.predict on uint8 images)",
        how=(f"Randomly initialised parsers (speed does not depend on the weights), images/s of predict on a batch, "
             f"the forward pass alone on float tensors (bench_models.throughput), and single-image latency; "
             f"{min_time:g} s per figure."),
        columns=["device", "config", "size", "batch", "predict img/s", "forward img/s", "predict/forward",
                 "latency p50 ms", "latency p95 ms", "n"],
        rows=rows,
        notes=notes,
    )
    common.finish(section, args, t_start)


if __name__ == "__main__":
    main()
