"""Run naming for --resume (cv_folds, forensics): the newest earlier run of the same config."""

from __future__ import annotations

import re

from workflows.runtime import resumable_run_name


def test_resume_picks_the_newest_run_of_the_same_config(tmp_path):
    base = "cv-default-abcd1234-0123456789"
    for name in (f"{base}-20261101-100000-fold-0", f"{base}-20261102-090000-final",
                 f"{base}-20261103-080000-fold-0", f"{base}-20261103-080000-fold-1",
                 "cv-default-abcd1234-ffffffffff-20261201-000000-fold-0"):  # another config: never picked
        (tmp_path / name).mkdir()
    assert resumable_run_name(base, tmp_path, resume=True) == f"{base}-20261103-080000"


def test_new_name_without_resume_or_without_a_previous_run(tmp_path, capsys):
    base = "forensics-smoke-abcd1234-0123456789"
    (tmp_path / f"{base}-20261101-100000-fold-0").mkdir()
    fresh = resumable_run_name(base, tmp_path, resume=False)
    assert re.fullmatch(rf"{base}-\d{{8}}-\d{{6}}", fresh) and fresh != f"{base}-20261101-100000"
    other = resumable_run_name("forensics-smoke-abcd1234-9999999999", tmp_path, resume=True)
    assert other.startswith("forensics-smoke-abcd1234-9999999999-")
    assert "nothing to resume" in capsys.readouterr().out
    # remote storage cannot be listed here: a new run, no error
    assert resumable_run_name(base, "s3://bucket/runs", resume=True).startswith(base + "-")
