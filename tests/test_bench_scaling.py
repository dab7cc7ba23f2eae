"""The scaling curve's one command (benchmarks/bench_scaling.py) on the smoke collection: both curves
(unseen GMs of the folds; a collection written elsewhere) written, and a rerun trains nothing."""

import csv
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

PARSERS = {"fen_pn", "classical", "prior", "random"}
METRICS = {"continuous/l1", "discrete/acc", "discrete/f1", "loss/auc"}


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_scaling_curve_writes_both_curves_and_a_rerun_trains_nothing(smoke_collection, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_scaling.py"), "--collection", smoke_collection.path,
           "--job-preset", "smoke", "--sizes", "3,all", "--seeds", "1", "--epochs", "1", "--folds", "2",
           "--images-per-gm", "16", "--eval-per-gm", "8", "--baseline-per-gm", "16", "--shuffles", "20",
           "--external", smoke_collection.path, "--out", str(out), "--figure-dir", str(out)]  # the smoke zoo stands in for GMs written elsewhere
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "TQDM_DISABLE": "1"}
    first = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # bench_scaling.collection_key: the folder's name and the GM table's hash (another build, another CSV)
    key = f"{Path(str(smoke_collection.path)).name}-{smoke_collection.manifest['gms_sha256'][:8]}"
    folds_csv, ext_csv = out / f"scaling_{key}.csv", out / f"scaling_{key}_on_{key}.csv"
    for path, sizes in ((folds_csv, {3.0, 8.0}), (ext_csv, {3.0, 16.0})):  # 16 GMs: 8 train per fold; all 16
        rows = _rows(path)
        assert path.with_suffix(".png").stat().st_size > 10_000
        assert {float(r["train_gms"]) for r in rows} == sizes, path.name
        for n in sizes:  # every parser on every headline metric, at every size
            got = {(r["parser"], r["metric"]) for r in rows if float(r["train_gms"]) == n}
            assert {(p, m) for p in PARSERS for m in METRICS} <= got, (path.name, n)
        assert all(0.0 < float(r["p_fen_pn_vs_classical"]) <= 1.0 for r in rows)
    for kind, path in (("folds", folds_csv), ("external", ext_csv)):  # the README's copies
        assert (out / f"scaling_{kind}.png").read_bytes() == path.with_suffix(".png").read_bytes()
    before = {p: p.read_bytes() for p in (folds_csv, ext_csv)}
    again = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("already") == 4, again.stdout[-3000:]  # 2 sizes x 2 curves, none trained again
    assert "decoded" not in again.stdout  # nothing was even loaded
    assert {p: p.read_bytes() for p in before} == before
    # the transfer curve alone (a rebuild whose fold curve is measured elsewhere): the folds are not touched
    alone = subprocess.run([*cmd, "--curves", "external"], env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=900)
    assert alone.returncode == 0, alone.stdout[-3000:] + alone.stderr[-3000:]
    assert alone.stdout.count("already") == 2 and "external" in alone.stdout, alone.stdout[-3000:]
    bad = subprocess.run([*cmd, "--curves", "fold"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert bad.returncode == 2 and "--curves" in bad.stderr


def test_the_results_section_fits_wall_against_gms_and_projects_a_cluster(tmp_path):
    """RESULTS.md's section: one row per point plus totals; the fit recovers wall = a + b * GMs, and
    four folds side by side take a quarter of one after the other."""
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import bench_scaling

    a, b = 300.0, 10.0
    curve = bench_scaling.Curve(tmp_path / "c.csv", "t")
    for key, size, seed in (("k1", 12, 0), ("k2", 12, 1), ("k3", 48, 0), ("k4", 192, 0)):
        curve.rows += [{"key": key, "size": size, "seed": seed, "train_gms": float(size), "wall_s": a + b * size,
                        "metric": "continuous/l1", "parser": "fen_pn"}]
    section = bench_scaling.results_section("folds", curve, 4, "1 epoch")
    assert [r[1] for r in section.rows] == ["12", "12", "48", "192", "folds"]
    assert section.rows[-1][-1] == sum(a + b * n for n in (12, 12, 48, 192))
    text = " ".join(section.notes)
    assert f"wall = {a:.0f} s + {b:.2f} s per training GM" in text
    total = sum(a + b * n for n in (12, 12, 48, 192)) / 60
    assert f"--num-workers 1 --concurrent-folds 1: {total:.0f} min" in text
    assert f"--num-workers 1 --concurrent-folds 4: {total / 4:.0f} min" in text
    # the transfer curve's own section: its points and total, no fold fit
    ext = bench_scaling.results_section("external", curve, 4, "1 epoch")
    assert ext.name == "scaling_external" and ext.name != section.name and not ext.notes
    assert [r[1] for r in ext.rows] == ["12", "12", "48", "192", "external"]
