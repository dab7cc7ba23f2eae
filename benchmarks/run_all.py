"""Run every benchmark and rewrite benchmarks/RESULTS.md with one table of targets plus each section.

Each benchmark runs in its own Python process (so peak-memory figures and Ray sessions are its
own), one after the other on the same machine, with the same collection.

Usage: python benchmarks/run_all.py [--quick] [--collection PATH] [--only pipeline training ...]
       make bench
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

SCRIPTS = {  # name -> script; order = order of the runs
    "quality": "bench_quality.py",
    "pipeline": "bench_pipeline.py",
    "training": "bench_training.py",
    "step": "bench_step.py",
    "memory": "bench_memory.py",
    "inference": "bench_inference.py",
    "parse": "bench_parse.py",
    "build": "bench_build.py",
    "build_cost": "bench_gm_cost.py",
    "gpu": "bench_gpu.py",  # without CUDA: "GPU: not measured", in a second
    "realism": "bench_realism.py",
}


def main() -> int:
    ap = common.base_args(__doc__)
    ap.add_argument("--only", nargs="+", choices=list(SCRIPTS), help="run only these (the others' sections are kept)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per script (1800; quick 600)")
    args = ap.parse_args()
    t0 = time.time()
    command = common.command_line()
    # resolved (built once) in a child process: this one stays small, because Linux carries a
    # parent's ru_maxrss over fork+exec into the children whose peak memory is measured
    # (``python -c`` imports from its working directory: benchmarks/, where ``common`` is)
    code = "import sys, common; c = common.get_collection(sys.argv[1] or None); print('COLLECTION=' + c.path)"
    found = subprocess.run([sys.executable, "-c", code, args.collection or ""], cwd=Path(__file__).resolve().parent,
                           stdout=subprocess.PIPE, text=True, check=True).stdout
    col_path = [ln for ln in found.splitlines() if ln.startswith("COLLECTION=")][-1].split("=", 1)[1]
    print(f"collection: {col_path}", flush=True)
    names = args.only or list(SCRIPTS)
    sections = common.read_sections() if args.only else {}
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, str(Path(__file__).resolve().parent / SCRIPTS[name]), "--json-out", str(out),
                   "--collection", col_path, *(["--quick"] if args.quick else [])]
            print(f"\n=== {name}: {' '.join(Path(c).name if c.startswith('/') else c for c in cmd[1:])}", flush=True)
            ts = time.time()
            try:
                rc = subprocess.run(cmd, timeout=args.timeout or (600 if args.quick else 1800)).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
            if rc == 0 and out.exists():
                sections[name] = common.Section.from_json(json.loads(out.read_text()))
                sections[name].command = f"{command}  →  benchmarks/{SCRIPTS[name]}{' --quick' if args.quick else ''}"
            else:
                failed.append(name)
                sections[name] = common.Section(
                    name=name, title=f"{name} (FAILED)", how=f"benchmarks/{SCRIPTS[name]} exited with {rc}; "
                    "run it alone to see why.", columns=["status"], rows=[["failed"]], command=command)
            print(f"=== {name}: {time.time() - ts:.0f} s", flush=True)
            if not args.no_write:  # after each script, so a later crash keeps what was measured
                common.write_results(sections, command, quick=args.quick)
    print(f"\nall benchmarks: {time.time() - t0:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if not args.no_write:
        print(f"results: {common.RESULTS.relative_to(common.REPO_ROOT)}")
        print("\n" + common.render(sections, command, args.quick).split("## Targets", 1)[1].split("\n## ", 1)[0].strip())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
