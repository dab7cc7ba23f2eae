"""Dataclass configs on the command line: presets as defaults, every field overridable.

``--preset NAME`` picks a dataclass instance; ``--field-name VALUE`` overrides a field
(``--config FILE`` (JSON/YAML) overrides in between). The effective config is what gets
logged, so a run can be repeated from its logged config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
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


def nested_fields(cls: type) -> dict[str, type]:
    """Fields of ``cls`` that are dataclasses themselves (e.g. JobConfig.model) -> their class."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def option_names(cls: type) -> list[str]:
    """Every flat option of ``cls``: its own fields, then each nested config's fields (one level),
    plus ``<nested>_preset`` where the nested class has a ``preset(name)`` constructor."""
    nested = nested_fields(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in nested]
    for n, sub in nested.items():
        names += [f"{n}_preset"] * hasattr(sub, "preset") + [f.name for f in dataclasses.fields(sub)]
    return names


def flat_fields(cfg: Any) -> dict[str, Any]:
    """The config as flat option name -> value (nested configs inlined): what is logged as MLflow
    params and what ``--config`` files and Tune search spaces name."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out.update(flat_fields(v) if dataclasses.is_dataclass(v) else {f.name: v})
    return out


def with_overrides(cfg: Any, over: dict[str, Any]) -> Any:
    """``cfg`` with flat overrides (``{"fen_depth": 6, "magnitude": 0.2}``) routed to the nested
    config that holds each name; ``{"model": {...}}`` (a logged config.json) works too. Lists become
    tuples. An unknown name is an error."""
    nested = nested_fields(type(cfg))
    flat = dict(over)
    for n in nested:
        if isinstance(flat.get(n), dict):
            flat.update(flat.pop(n))
    flat = {k: tuple(v) if isinstance(v, list) else v for k, v in flat.items()}
    unknown = sorted(set(flat) - set(option_names(type(cfg))))
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; known: {sorted(option_names(type(cfg)))}")
    own = {f.name for f in dataclasses.fields(cfg)} - set(nested)
    top: dict[str, Any] = {k: v for k, v in flat.items() if k in own}
    for n, sub_cls in nested.items():
        sub = getattr(cfg, n)
        if f"{n}_preset" in flat:
            sub = sub_cls.preset(flat[f"{n}_preset"])
        sub_names = {f.name for f in dataclasses.fields(sub_cls)}
        top[n] = dataclasses.replace(sub, **{k: v for k, v in flat.items() if k in sub_names})
    return dataclasses.replace(cfg, **top)


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, group: str | None = None,
                       skip: tuple[str, ...] = (), presets: dict[str, Any] | None = None) -> None:
    """One ``--name`` option per field of ``cls`` and of its nested configs (default None = keep
    the preset's value); with ``presets`` (name -> instance), the help shows each preset's value."""
    g = parser.add_argument_group(group or cls.__name__)
    nested = nested_fields(cls)
    hints = typing.get_type_hints(cls)
    for sub in nested.values():
        hints.update(typing.get_type_hints(sub))
    for name in option_names(cls):
        if name in skip:
            continue
        if name.endswith("_preset") and name[: -len("_preset")] in nested:
            g.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                           help=f"start the {name[: -len('_preset')]} config from this preset of "
                                f"{nested[name[: -len('_preset')]].__name__}, then apply the options below")
            continue
        tp = _field_type(hints[name])
        kind = (_parse_bool if tp is bool else _int_tuple if _is_int_tuple(tp)
                else tp if tp in (int, float, str) else str)
        values = ", ".join(f"{n} {_shown(flat_fields(c)[name])}" for n, c in (presets or {}).items())
        g.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None,
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
    """preset < file overrides < command-line options. An unknown key or a value the config's own
    checks refuse is a usage error, as argparse's: ``error: ...`` on stderr, exit status 2."""
    over = dict(file_overrides or {})
    for n in option_names(type(preset)):
        v = getattr(args, n, None)
        if v is not None:
            over[n] = v
    try:
        return with_overrides(preset, over)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
