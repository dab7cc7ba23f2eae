"""Dataclass configs on the command line: presets as defaults, every field overridable.

``--preset NAME`` picks a dataclass instance; ``--field-name VALUE`` overrides a field
(``--config FILE`` (JSON/YAML) overrides in between). The effective config is what gets
logged, so a run can be repeated from its logged config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any


def _field_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _field_type(args[0]) if args else str
    return tp


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {s!r}")


def _int_tuple(s: str) -> tuple[int, ...]:
    """``"16,32"`` -> ``(16, 32)``; ``""`` -> ``()`` (the field's "derive it" value)."""
    try:
        return tuple(int(w) for w in s.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _is_int_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple and typing.get_args(tp)[:1] == (int,)


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, group: str | None = None,
                       skip: tuple[str, ...] = (), presets: dict[str, Any] | None = None) -> None:
    """One ``--name`` option per field of ``cls`` (default None = keep the preset's value); with
    ``presets`` (name -> instance), the help shows each preset's value."""
    g = parser.add_argument_group(group or cls.__name__)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = _field_type(hints[f.name])
        kind = (_parse_bool if tp is bool else _int_tuple if _is_int_tuple(tp)
                else tp if tp in (int, float, str) else str)
        values = ", ".join(f"{n} {_shown(getattr(c, f.name))}" for n, c in (presets or {}).items())
        g.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=None,
                       help=f"({tp.__name__ if hasattr(tp, '__name__') else tp}) "
                            + (f"presets: {values}" if values else "preset value if omitted"))


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def load_overrides(path: str | Path | None) -> dict[str, Any]:
    """A JSON or YAML file of field overrides (e.g. the best config of a Tune sweep)."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"error: --config {p} does not exist")
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise SystemExit(f"error: --config {p} must hold a mapping of field: value")
    return data


def resolve(preset: Any, args: argparse.Namespace, file_overrides: dict[str, Any] | None = None) -> Any:
    """preset < file overrides < command-line options; unknown file keys are an error."""
    names = {f.name for f in dataclasses.fields(preset)}
    over = dict(file_overrides or {})
    unknown = sorted(set(over) - names)
    if unknown:
        raise SystemExit(f"error: unknown config keys {unknown}; known: {sorted(names)}")
    for n in names:
        v = getattr(args, n, None)
        if v is not None:
            over[n] = v
    # a JSON/YAML file gives lists where the dataclass holds tuples (frozen, hashable)
    over = {k: tuple(v) if isinstance(v, list) else v for k, v in over.items()}
    return dataclasses.replace(preset, **over)
