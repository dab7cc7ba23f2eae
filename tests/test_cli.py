"""The dataclass command line: typed fields (tuples of ints included), presets in --help."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

import numpy as np
import pytest

from gmparse.data_pipeline.schema import CONTINUOUS, LOSS_TYPES, NUM_CLASSES, TargetArrays, groups_from_losses
from gmparse.workflows.lib.cli import add_dataclass_args, resolve


@dataclass(frozen=True)
class Cfg:
    epochs: int = 3
    lr: float = 1e-3
    spectral: bool = False
    widths: tuple[int, ...] = (16, 32)
    name: str = "a"


PRESETS = {"smoke": Cfg(), "big": Cfg(epochs=9, widths=(64, 128, 256))}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_dataclass_args(p, Cfg, presets=PRESETS)
    return p


def test_options_are_typed_and_override_the_preset():
    args = _parser().parse_args(["--epochs", "5", "--widths", "8, 16", "--spectral", "yes"])
    cfg = resolve(PRESETS["big"], args)
    assert cfg == Cfg(epochs=5, lr=1e-3, spectral=True, widths=(8, 16), name="a")
    assert resolve(PRESETS["big"], _parser().parse_args([])) == PRESETS["big"]


def test_file_lists_become_tuples_and_unknown_keys_fail(capsys):
    cfg = resolve(PRESETS["smoke"], _parser().parse_args([]), {"widths": [4, 8]})
    assert cfg.widths == (4, 8) and hash(cfg)
    with pytest.raises(SystemExit) as e:
        resolve(PRESETS["smoke"], _parser().parse_args([]), {"width": [4]})
    assert e.value.code == 2 and "error: unknown config keys ['width']" in capsys.readouterr().err


@pytest.mark.parametrize("bad, says", [(["--widths", "16,x"], "comma-separated integers"),
                                       (["--spectral", "maybe"], "expected a boolean"),
                                       (["--epochs", "1.5"], "invalid int value")])
def test_bad_values_are_refused(capsys, bad, says):
    with pytest.raises(SystemExit):
        _parser().parse_args(bad)
    assert says in capsys.readouterr().err


def test_help_shows_each_presets_value():
    text = _parser().format_help()
    assert "smoke 16,32, big 64,128,256" in text
    assert "smoke 3, big 9" in text


def test_job_config_nests_the_model_and_the_weights_behind_flat_options():
    import dataclasses
    import json

    from gmparse.models.config import ModelConfig
    from gmparse.workflows.lib.job_config import JOB_PRESETS, JobConfig

    p = argparse.ArgumentParser()
    add_dataclass_args(p, JobConfig, presets=JOB_PRESETS)
    cfg = resolve(JOB_PRESETS["default"], p.parse_args(["--fen-depth", "8", "--magnitude", "0.2", "--epochs", "3"]))
    assert (cfg.model.fen_depth, cfg.model.fen_width, cfg.model.pn_input) == (8, 24, "branch")
    assert (cfg.weights.magnitude, cfg.weights.symmetry, cfg.epochs) == (0.2, 1.0, 3)
    logged = json.loads(json.dumps(dataclasses.asdict(cfg)))  # the config.json a run logs repeats it
    assert resolve(JOB_PRESETS["smoke"], p.parse_args([]), logged) == cfg
    assert resolve(JOB_PRESETS["default"], p.parse_args(["--model-preset", "paper"])).model == ModelConfig.preset("paper")
    with pytest.raises(SystemExit) as e:
        resolve(JOB_PRESETS["default"], p.parse_args([]), {"fen_deep": 3})
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:  # the config's own checks: a usage error too
        resolve(JOB_PRESETS["default"], p.parse_args(["--ema", "1.5"]))
    assert e.value.code == 2
    text = " ".join(p.format_help().split())
    assert "--fen-depth FEN_DEPTH (int) presets: smoke 4, default 6, wide 6, paper 17" in text
    assert "--magnitude MAGNITUDE (float) presets: smoke 0.1, default 0.1, wide 0.1, paper 0.1" in text


def test_batch_scale_scales_batch_and_lr_together_and_precision_is_checked() -> None:
    from gmparse.workflows.lib.job_config import job_config
    from gmparse.workflows.lib.parsing_task import parsing_task

    cfg = replace(job_config("default"), batch_scale=4)
    assert (cfg.step_batch_size, cfg.step_lr) == (4 * 64, 4 * cfg.lr)
    train = job_config("default")
    rng = np.random.default_rng(0)
    loss = rng.integers(0, 2, (12, len(LOSS_TYPES)))
    targets = TargetArrays(rng.uniform(0, 1, (12, len(CONTINUOUS))).astype(np.float32),
                           np.stack([np.arange(12) % c for c in NUM_CLASSES], axis=1), loss, groups_from_losses(loss))
    task, loop = parsing_task(cfg, targets)
    assert (loop.batch_size, loop.lr) == (256, 4 * train.lr) and task.precision == "auto"
    assert not task.hflip and parsing_task(replace(cfg, hflip=True), targets)[0].hflip  # --hflip reaches the step
    assert parsing_task(replace(cfg, label_smoothing=0.1), targets)[0].label_smoothing == 0.1  # and --label-smoothing
    with pytest.raises(ValueError, match="precision"):
        replace(cfg, precision="fp16")
    with pytest.raises(ValueError, match="batch-scale"):
        replace(cfg, batch_scale=0)


def test_job_key_sees_the_spatial_branch_only_when_on():
    import dataclasses

    from gmparse.workflows.lib.job_config import job_config

    cfg = job_config("default")
    on = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, spatial_branch=True))
    assert on.key() != cfg.key()  # a different network is a different run
    # off, it is left out of the hash: the default job's key without label smoothing is still that
    # of the runs before it existed (make run 461c87e3, cv-default-6c855534-81386a3601-...; 55ba3f7d
    # and 74ddb9f0 on be0c3761), so they resume and are found; with it (the default since make run
    # ce7312f5) the key is that run's
    unsmoothed = dataclasses.replace(cfg, label_smoothing=0.0)
    assert unsmoothed.key() == "81386a3601" and cfg.key() == "43e0b9c32e"
    assert dataclasses.replace(unsmoothed, hflip=True).key() != unsmoothed.key()  # --hflip likewise
    assert dataclasses.replace(cfg, alias="wide").key() == cfg.key()  # where it registers is not what it trains
    for bad in ("v3", "latest", "two words", ""):
        with pytest.raises(ValueError, match="alias"):
            dataclasses.replace(cfg, alias=bad)


def test_default_means_one_thing():
    """``JobConfig()`` is the default preset, and the default preset's network is the model preset
    named default (what ``make run`` registers)."""
    from gmparse.models.config import ModelConfig
    from gmparse.workflows.lib.job_config import JOB_PRESETS, JobConfig

    assert JobConfig() == JOB_PRESETS["default"]
    assert JOB_PRESETS["default"].model == ModelConfig.preset("default")
    assert JOB_PRESETS["smoke"].model == ModelConfig.preset("smoke")
    assert JOB_PRESETS["paper"].model == ModelConfig.preset("paper")
    wide = JOB_PRESETS["wide"]  # one of the default's networks on the wide collection, a challenger of the champion
    assert wide.model == replace(ModelConfig.preset("default"), ensemble=1)
    assert wide.collection_preset == "wide" and wide.alias == "wide" and wide.epochs == 7


@pytest.mark.parametrize("script", ["cv_folds", "tune_sweep", "forensics", "build_collection", "parse",
                                    "score_collection"])
def test_help_loads_no_torch_ray_or_mlflow(script):
    """``--help`` answers before the heavy imports (torch, Ray, MLflow): they wait until the arguments
    parse. Checked by what is imported, not by timing (benchmarks time, tests check)."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    code = ("import runpy, sys\n"
            f"sys.argv = [{script!r}, '--help']\n"
            "try:\n"
            f"    runpy.run_path({str(REPO_ROOT / 'workflows' / (script + '.py'))!r}, run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    assert e.code in (0, None), e.code\n"
            "heavy = sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1500:]
    assert "usage:" in r.stdout
