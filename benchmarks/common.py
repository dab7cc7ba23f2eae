"""Shared helpers of the benchmark scripts: machine facts, timing, Ray sessions, the results file.

Every ``bench_*.py`` builds one :class:`Section` (a markdown table with optional "target" and
"met?" columns, plus notes), prints it, and writes it into ``benchmarks/RESULTS.md``:
alone, a script replaces its own section of the file (the others are kept); ``run_all.py``
rewrites the whole file from the sections of one run. Each section's data is stored in the
file as a JSON comment, so the summary table of targets can be rebuilt from the file alone.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "RESULTS.md"
WORK_DIR = Path(os.environ.get("GMPARSE_BENCH_DIR", "/tmp/gmparse-bench"))

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "0")

#: order of the sections in RESULTS.md
#: the sections of RESULTS.md in order; ``render`` numbers them 1, 2, ... in this order (a script's
#: title carries no number, so the numbers never collide or run out of order)
SECTION_ORDER = ["pipeline", "training", "step", "memory", "inference", "parse", "build", "build_cost", "gpu", "realism", "quality", "scaling", "scaling_external"]
_TITLE_NUMBER = re.compile(r"^\d+[a-z]?\.\s+")


# --- machine facts ---------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def n_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def versions() -> dict[str, str]:
    """Installed versions, read from package metadata (no imports, see machine())."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for mod in ("torch", "ray", "mlflow", "numpy", "torchvision", "pyarrow"):
        try:
            out[mod] = version(mod)
        except PackageNotFoundError:
            out[mod] = "n/a"
    return out


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": n_cores(), "cpu": cpu_model(), "platform": platform.platform()}
    try:
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
        info["memory_gib"] = round(mem_kb / 2**20, 1)
    except (OSError, AttributeError):
        pass
    try:
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:  # no torch import here: run_all.py stays small, so its children's ru_maxrss is their own
        if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
            info["gpu"] = sys.modules["torch"].cuda.get_device_name(0)
        elif shutil.which("nvidia-smi"):
            gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout.strip()
            if gpus:
                info["gpu"] = gpus.splitlines()[0]
    except Exception:
        pass
    return info


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def now() -> str:
    return _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


# --- timing ----------------------------------------------------------------------------------
def best_of(fn: Callable[[], float], repeats: int) -> tuple[float, list[float]]:
    """Run ``fn`` (returning a rate, higher is better) ``repeats`` times: (best, all)."""
    vals = [fn() for _ in range(repeats)]
    return max(vals), vals


def percentile(xs: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(xs, dtype=float), q))


def peak_memory_mb() -> dict[str, float]:
    """This process's peak resident memory: ru_maxrss and /proc/self/status VmHWM (MiB)."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"ru_maxrss_mb": rss / (1024 * 1024 if sys.platform == "darwin" else 1024)}
    try:
        m = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
        if m:
            out["vmhwm_mb"] = int(m.group(1)) / 1024
    except OSError:
        pass
    return out


def one_torch_thread(n: int = 1) -> None:
    import torch

    torch.set_num_threads(n)


# --- Ray ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def ray_session(num_cpus: int, **kwargs: Any) -> Iterator[float]:
    """A private local Ray (never ``ray stop``): yields its start-up seconds, shuts it down after."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    for attempt in range(3):  # a raylet can time out starting on an overloaded (shared) machine
        t0 = time.perf_counter()
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, **kwargs)
            break
        except Exception as e:  # Ray raises a bare Exception on a start-up timeout
            print(f"ray.init failed ({str(e)[:120]}); retrying", file=sys.stderr, flush=True)
            with contextlib.suppress(Exception):
                ray.shutdown()
            if attempt == 2:
                raise
    startup = time.perf_counter() - t0
    try:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        with contextlib.suppress(AttributeError):
            ctx.print_on_execution_start = False
        yield startup
    finally:
        ray.shutdown()


@contextlib.contextmanager
def cpu_affinity(cpus: set[int] | None) -> Iterator[None]:
    """Pin this process (and whatever it starts meanwhile, e.g. a raylet) to ``cpus``."""
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


# --- the collection --------------------------------------------------------------------------
def get_collection(path: str | None):
    """``--collection PATH``; else the default collection when ``make run`` has built it (the
    default preset's figures, and passes long enough to amortize per-pass costs); else the
    smoke zoo (built once under data/collections/, then reused)."""
    from gmparse.data_pipeline.build import build_config, ensure_collection
    from gmparse.data_pipeline.collection import CollectionError, open_collection

    if path:
        return open_collection(path)
    for preset in ("default", "smoke"):
        cfg = build_config(preset)
        try:
            col = open_collection(REPO_ROOT / cfg.default_path())
            if col.manifest.get("build_key") == cfg.key():
                return col
        except CollectionError:
            pass
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=n_cores(), include_dashboard=False, log_to_driver=False)
    try:
        print(f"building the smoke collection under {cfg.default_path()} (once) ...", flush=True)
        return ensure_collection(cfg, REPO_ROOT / cfg.default_path(), progress=False)
    finally:
        if started:
            ray.shutdown()


def collection_label(col) -> str:
    m = col.manifest
    return (f"{Path(col.path).name}: {m['counts']['gms']} GMs, {m['counts']['images']} images, "
            f"{col.image_size}x{col.image_size}")


# --- sections and the results file -------------------------------------------------------------
@dataclass
class Target:
    """One targeted ratio, repeated in the summary table at the top of RESULTS.md."""

    what: str
    value: float | None
    target: str  # e.g. ">= 0.8"
    met: bool | None  # None: could not be measured


@dataclass
class Section:
    name: str  # key in SECTION_ORDER
    title: str
    how: str  # what is measured, and how
    columns: list[str]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    command: str = field(default_factory=command_line)
    date: str = field(default_factory=now)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Section:
        d = dict(d)
        d["targets"] = [Target(**t) for t in d.get("targets", [])]
        return cls(**d)

    def table(self) -> str:
        return markdown_table(self.columns, self.rows)

    def markdown(self) -> str:
        out = [f"## {self.title}", "", self.how, "", self.table(), ""]
        out += [f"- {n}" for n in self.notes]
        if self.notes:
            out.append("")
        out.append(f"_measured {self.date} in {self.seconds:.0f} s by `{self.command}`_")
        return "\n".join(out)

    def print(self) -> None:
        print(f"\n{self.title}\n{self.table()}")
        for n in self.notes:
            print(f"  - {n}")
        sys.stdout.flush()


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "**NO**"
    if isinstance(v, float):
        if v != v:  # nan
            return "—"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        return f"{v:.{digits}g}"
    return str(v)


def met_cell(met: bool | None) -> str:
    return "—" if met is None else ("yes" if met else "**NO**")


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[fmt(c) for c in r] for r in rows]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines)


_DATA_RE = re.compile(r"<!-- bench-data (\{.*\}) -->")


def read_sections(path: Path = RESULTS) -> dict[str, Section]:
    if not path.exists():
        return {}
    out = {}
    for m in _DATA_RE.finditer(path.read_text()):
        try:
            s = Section.from_json(json.loads(m.group(1)))
            out[s.name] = s
        except (ValueError, TypeError):
            continue
    return out


def render(sections: dict[str, Section], command: str, quick: bool | None = None) -> str:
    mach, vers = machine(), versions()
    order = [n for n in SECTION_ORDER if n in sections] + [n for n in sections if n not in SECTION_ORDER]
    sections = {n: dataclasses.replace(sections[n], title=f"{i}. {_TITLE_NUMBER.sub('', sections[n].title)}")
                for i, n in enumerate(order, 1)}
    lines = [
        "# gmparse benchmarks",
        "",
        "Rewritten by `python benchmarks/run_all.py [--quick]` (`make bench`); each `benchmarks/bench_*.py`",
        "also runs alone, prints its table and replaces its own section below. Ratios are measured side",
        "by side in one run on one machine; on a shared machine read them as smoke checks.",
        "",
        f"- date: {now()}",
        f"- machine: {mach['cores']} cores, {mach['cpu']}, {mach.get('memory_gib', '?')} GiB RAM, "
        f"load average {mach.get('load_avg_1m', '?')} at the end; GPU: {mach.get('gpu', 'none')}",
        f"- platform: {mach['platform']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        f"- command: `{command}`" + ("" if quick is None else f" ({'quick' if quick else 'full'} run)"),
        "",
        "## Targets",
        "",
    ]
    trows = [[sections[n].title.split(".")[0], t.what, t.value, t.target, met_cell(t.met)]
             for n in order for t in sections[n].targets]
    lines += [markdown_table(["#", "what", "measured", "target", "met?"], trows) if trows else "(none measured)", ""]
    for n in order:
        s = sections[n]
        lines += [s.markdown(), "", f"<!-- bench-data {json.dumps(s.to_json(), sort_keys=True)} -->", ""]
    return "\n".join(lines)


def write_results(sections: dict[str, Section], command: str, quick: bool | None = None,
                  path: Path = RESULTS) -> None:
    path.write_text(render(sections, command, quick))


def update_results(section: Section, path: Path = RESULTS) -> None:
    """Replace one section of RESULTS.md (a script run alone), keeping the others."""
    sections = read_sections(path)
    sections[section.name] = section
    write_results(sections, section.command, path=path)


def base_args(description: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes (a few minutes)")
    ap.add_argument("--collection", help="collection folder (default: the smoke zoo, built once)")
    ap.add_argument("--json-out", help="write the section as JSON here (run_all.py) instead of RESULTS.md")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    return ap


def finish(section: Section, args: argparse.Namespace, t0: float) -> None:
    section.seconds = time.time() - t0
    section.print()
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(section.to_json()))
    elif not args.no_write:
        update_results(section)
        print(f"(section '{section.name}' written to {RESULTS.relative_to(REPO_ROOT)})")
