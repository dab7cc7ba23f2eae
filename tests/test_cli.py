"""The dataclass command line: typed fields (tuples of ints included), presets in --help."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from workflows.cli import add_dataclass_args, resolve


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


def test_file_lists_become_tuples_and_unknown_keys_fail():
    cfg = resolve(PRESETS["smoke"], _parser().parse_args([]), {"widths": [4, 8]})
    assert cfg.widths == (4, 8) and hash(cfg)
    with pytest.raises(SystemExit, match="unknown config keys"):
        resolve(PRESETS["smoke"], _parser().parse_args([]), {"width": [4]})


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
