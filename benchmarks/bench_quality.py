"""Quality: the default preset's pooled GM-level table (FEN+PN, classical baseline, random ground
truth, p-values), copied from the main job's MLflow parent run, with the per-fold spread below it.

Looks up the newest finished parent run (no parent of its own) of the preset's own job (its
``JobConfig.key()`` in the run name, on the preset's default collection; ``--run-id`` picks
another) in the experiment ``gmparse-cv`` of the tracking store (``MLFLOW_TRACKING_URI``, default
``sqlite:///<repo>/mlflow.db``, see workflows/lib/runtime.py) and copies its ``tables/cv_summary.txt``
(``tables/cv_summary.json`` formatted when the text is missing), with the run id, wall seconds and
the driver's peak RSS it logged. A missing local store is not created: the table says "not run yet".

Usage: python benchmarks/bench_quality.py [--preset default] [--experiment gmparse-cv] [--run-id ID]
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import common

PRODUCE = "make run  (= .venv/bin/python workflows/cv_folds.py --preset {preset})"


def find_run(uri: str, experiment: str, preset: str, run_id: str | None = None):
    """The run to report: ``run_id`` (a prefix is enough) or else the newest finished parent run of
    exactly the preset's job (its config key in the run name) on the preset's own collection, so a
    variant (``--ensemble 1``, a held-out implementation, another collection) is never taken for it."""
    from mlflow.tracking import MlflowClient

    from gmparse.data_pipeline.build_config import build_config
    from gmparse.workflows.lib.job import run_base
    from gmparse.workflows.lib.job_config import job_config

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return client, None
    if run_id:
        found = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_id LIKE '{run_id}%'")
        return client, (found[0] if len(found) == 1 else None)
    cfg = job_config(preset)
    base = run_base("cv", cfg, build_config(cfg.collection_preset, seed=cfg.seed).key()) + "-"  # as cv_folds names it
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.preset = '{preset}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=200,
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and (r.info.run_name or "").startswith(base)]
    return client, (parents[0] if parents else None)


def pooled_rows(client, run) -> list[dict]:
    """The run's ``tables/pooled.json`` (empty for runs made before the pooled table existed)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return json.loads(Path(client.download_artifacts(run.info.run_id, "tables/pooled.json", tmp)).read_text())
        except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            return []


def summary_table(client, run) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return Path(client.download_artifacts(run.info.run_id, "tables/cv_summary.txt", tmp)).read_text().splitlines()
        except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            pass
        try:
            summary = json.loads(Path(client.download_artifacts(run.info.run_id, "tables/cv_summary.json", tmp)).read_text())
        except Exception:  # noqa: BLE001
            return []
    from gmparse.workflows.cv_folds import format_summary

    return format_summary(summary).splitlines()


def main() -> None:
    t_start = time.time()
    ap = common.base_args(__doc__)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--experiment", default="gmparse-cv")
    ap.add_argument("--run-id", help="report this run (an id prefix is enough) instead of the newest of the preset's job")
    args = ap.parse_args()
    from gmparse.workflows.lib.runtime import tracking_uri

    uri = tracking_uri()
    produce = PRODUCE.format(preset=args.preset) if args.preset == "default" else (
        f".venv/bin/python workflows/cv_folds.py --preset {args.preset}")
    run, client, error = None, None, None
    local_db = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None
    if local_db is not None and not Path(local_db).exists():
        error = f"no tracking store at {local_db}"
    else:
        try:
            client, run = find_run(uri, args.experiment, args.preset, args.run_id)
        except Exception as e:  # noqa: BLE001 - an unreachable server, a broken store
            error = f"{type(e).__name__}: {e}"[:300]
    notes: list[str] = []
    if run is None:
        rows = [["not run yet", error or (f"no run {args.run_id} in '{args.experiment}'" if args.run_id else
                                          f"no finished '{args.experiment}' parent run of the {args.preset} preset's "
                                          "job (its config key) on its default collection"),
                 f"`{produce}`"]]
        columns = ["status", "why", "command to produce it"]
        how = f"Tracking store {uri}, experiment {args.experiment}, tag preset={args.preset}."
    else:
        m = run.data.metrics
        columns = ["metric (GM level, pooled)", "FEN+PN", "classical", "image-blind prior", "random (± std)",
                   "p FEN+PN > random", "p classical > random", "FEN+PN - classical [95% CI]", "p paired"]
        rows = [[r["metric"] + (" (lower is better)" if str(r["metric"]).endswith("l1") else ""),
                 f"{r['fen_pn']:.3f}", f"{r['classical']:.3f}",
                 f"{r['prior']:.3f}" if "prior" in r else "— (run predates it)",
                 f"{r['random']:.3f} ± {r['random_std']:.3f}",
                 f"{r['p_fen_pn_vs_random']:.4f}", f"{r['p_classical_vs_random']:.4f}",
                 f"{r['fen_pn_minus_classical']:+.3f} [{r['diff_ci_low']:+.3f}, {r['diff_ci_high']:+.3f}]",
                 f"{r['p_fen_pn_vs_classical']:.4f}"] for r in pooled_rows(client, run)]
        if not rows:
            rows = [["the run has no tables/pooled.json (made before the pooled table)"] + [""] * (len(columns) - 1)]
        notes.append("per fold (mean ± std over folds):\n```\n" + "\n".join(summary_table(client, run)) + "\n```")
        params = run.data.params
        how = (f"MLflow run `{run.info.run_id}` ({run.info.run_name}, experiment {args.experiment}, "
               f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(run.info.start_time / 1000))}) in {uri}: "
               f"{params.get('folds', '?')} GM-disjoint folds x {params.get('epochs', '?')} epochs on "
               f"{params.get('gms', '?')} GMs; baseline = labels shuffled across GMs.")
        if "wall_seconds" in m:
            resumed = " (resumed: this invocation only, not the whole job)" if run.data.tags.get("resumed") == "true" else ""
            notes.append(f"main job wall time: {m['wall_seconds']:.0f} s ({m['wall_seconds'] / 60:.1f} min){resumed}; "
                         f"driver peak RSS {m.get('driver_max_rss_mb', float('nan')):.0f} MiB")
    section = common.Section(name="quality", title=f"Quality ({args.preset} preset, cross-fold, unseen GMs)",
                             how=how, columns=columns, rows=rows, notes=notes)
    common.finish(section, args, t_start)


if __name__ == "__main__":
    main()
