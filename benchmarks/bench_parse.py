"""parse.py's two paths: files/s in process vs through Ray Data, by number of files.

``workflows.parse.parse_files`` - what ``parse.py`` runs after loading its models - on N PNG files
of the collection (the default model config at the collection's size, the parser alone), each N
with ``ray_threshold`` forced to pick the path:

- in process: ``ImagePredictor.parse_paths`` in batches (read, check, fit, predict, describe);
- Ray Data: the same predictor in a ``workflows.lib.batch_inference.actor_pool`` of 1 actor and of one per
  core, Ray started by the call (``init_ray``) and shut down after it, as a user's command pays it.

Ray's start-up is inside the Ray rows (a user's ``parse.py`` pays it), and also shown alone. The
break-even N, where Ray first beats the in-process path, decides ``--ray-threshold``'s default
(none at all where Ray never wins: then parse.py stays in process unless told otherwise).

Usage: python benchmarks/bench_parse.py [--quick] [--collection PATH] [--files 16 64 256 1024 4096]
"""

from __future__ import annotations

import time
from pathlib import Path

import common


def write_files(col, n: int, root: Path) -> list[Path]:
    """The first ``n`` images of the collection as PNG files (bytes as stored)."""
    import shutil

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    out: list[Path] = []
    for rb in col.iter_images():
        for image_id, data in zip(rb.column("image_id").to_pylist(), rb.column("image").to_pylist()):
            p = root / f"{len(out):06d}_{image_id.replace('/', '_')}.png"
            p.write_bytes(data)
            out.append(p)
            if len(out) == n:
                return out
    return out


def parse_rate(files: list[Path], models, ray: bool, actors: int) -> float:
    import ray as ray_mod

    from gmparse.workflows.lib.image_parsing import parse_files

    t0 = time.perf_counter()
    results, mode = parse_files(files, models, batch_size=32, ray_threshold=0 if ray else len(files) + 1,
                                actors=actors)
    secs = time.perf_counter() - t0
    if ray:
        ray_mod.shutdown()
    assert mode == ("ray" if ray else "local") and all(r["status"] == "ok" for r in results)
    return len(files) / secs


def main() -> None:
    t_start = time.time()
    ap = common.base_args(__doc__)
    ap.add_argument("--files", type=int, nargs="+", default=None, help="file counts (16 64 256 1024 4096; quick to 256)")
    args = ap.parse_args()
    counts = args.files or ([16, 64, 256] if args.quick else [16, 64, 256, 1024, 4096])
    common.one_torch_thread()
    col = common.get_collection(args.collection)
    from bench_inference import make_parser

    from gmparse.workflows.lib.image_parsing import LoadedModels

    parser, _ = make_parser("default", col.image_size, "cpu")
    models = LoadedModels(parser=parser)
    files = write_files(col, max(counts), common.WORK_DIR / "parse-files")
    cores = common.n_cores()
    contenders = {"in process": (False, 1), "Ray Data, 1 actor": (True, 1), f"Ray Data, {cores} actors": (True, cores)}
    rows, breakeven = [], None
    parse_rate(files[:8], models, False, 1)  # warm-up: imports, page cache
    for n in counts:
        rates = {k: parse_rate(files[:n], models, ray, a) for k, (ray, a) in contenders.items()}
        best_ray = max(v for k, v in rates.items() if k != "in process")
        if breakeven is None and best_ray > rates["in process"]:
            breakeven = n
        rows.append([n, *rates.values(), best_ray / rates["in process"]])
        print(f"{n} files: " + "; ".join(f"{k} {v:.1f}/s" for k, v in rates.items()), flush=True)
    with common.ray_session(cores) as startup:
        pass
    section = common.Section(
        name="parse",
        title="parse.py: in process vs Ray Data (files/s, CPU)",
        how=(f"workflows.parse.parse_files on N PNG files of {common.collection_label(col)}, the default model "
             f"config (parser only), batch 32, one torch thread per process; Ray rows include starting and "
             f"stopping Ray (ray.init alone: {startup:.1f} s)."),
        columns=["files", *contenders, "best Ray / in process"],
        rows=rows,
        notes=[f"Ray Data first beats the in-process path at {breakeven} files." if breakeven else
               f"Ray Data never beat the in-process path up to {max(counts)} files on this {cores}-core machine: "
               "its start-up and per-task costs outweigh the second core.",
               "On a running cluster (RAY_ADDRESS set) Ray's start-up is not paid; GPU: not measured."],
    )
    common.finish(section, args, t_start)


if __name__ == "__main__":
    main()
