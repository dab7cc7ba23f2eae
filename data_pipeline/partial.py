"""A collection build's finished GMs, persisted one at a time, so a build resumes and grows.

A build works in a staging folder beside its target, ``.<name>.partial``: each GM, once its
Ray task returns, is written there as its image shard(s), its grid and, last, its record
(``records/NNNNN.json``: the gms row's inputs, the gate's verdict and the shards' hashes), each
file by write-then-rename, so a GM is either wholly there or not at all. A rerun with the same
settings reads the records back (re-hashing their shards) and builds only the missing GMs; the
finished collection is assembled from the records alone, so an interrupted build ends with the
very files of an uninterrupted one. The records stay in the finished collection: a build of more
GMs with the same settings (the same *lineage*: every setting but the number of GMs) takes the
GMs it shares with any finished or partial collection of that lineage beside it, by hard link.

Machine-dependent figures (CPU seconds by phase, the node a GM ran on) are kept in each record's
``timing`` and go to the manifest, never into gms.parquet, whose hash is the same on any machine.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmparse.data_pipeline.collection import (
    GRIDS_DIR,
    IMAGES_DIR,
    MANIFEST,
    CollectionError,
    atomic_write_bytes,
    sha256_file,
    write_shard,
)

RECORDS_DIR = "records"
LINEAGE_FILE = "lineage.json"


@dataclass
class GMRecord:
    """One finished GM of a build (kept or rejected by the gate, or failed in its own code)."""

    index: int
    gm_id: str
    status: str  # "kept" | "rejected" | "failed"
    result: dict[str, Any]  # labels, spec, quality, realism, ... (what the gms row is made of)
    shards: list[dict[str, Any]]
    grid: bool
    timing: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1)


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


class PartialBuild:
    """The staging folder of one build target (see the module docstring)."""

    def __init__(self, out: Path, lineage: str, lineage_fields: Mapping[str, Any]) -> None:
        self.out = Path(out).resolve()
        self.dir = self.out.parent / f".{self.out.name}.partial"
        self.lineage = lineage
        marker = self.dir / LINEAGE_FILE
        if self.dir.exists():
            try:
                same = json.loads(marker.read_text()).get("lineage") == lineage
            except (OSError, ValueError):
                same = False
            if not same:  # a partial build of other settings at this target: it cannot be resumed
                shutil.rmtree(self.dir)
        for d in (IMAGES_DIR, GRIDS_DIR, RECORDS_DIR):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        if not marker.exists():
            atomic_write_bytes(marker, json.dumps({"lineage": lineage, "fields": dict(lineage_fields)},
                                                  indent=1, sort_keys=True).encode())

    # --- reading back -------------------------------------------------------------------------
    @staticmethod
    def read_records(folder: Path, verify: bool = True) -> dict[int, GMRecord]:
        """The records under ``folder`` whose files are all there (and match their hashes)."""
        out: dict[int, GMRecord] = {}
        rec_dir = folder / RECORDS_DIR
        if not rec_dir.is_dir():
            return out
        for p in sorted(rec_dir.glob("[0-9]*.json")):
            try:
                rec = GMRecord(**json.loads(p.read_text()))
            except (OSError, ValueError, TypeError):
                continue
            files_ok = all((folder / s["file"]).is_file() and (not verify or sha256_file(folder / s["file"]) == s["sha256"])
                           for s in rec.shards)
            if files_ok and (not rec.grid or (folder / GRIDS_DIR / f"{rec.gm_id}.png").is_file()):
                out[rec.index] = rec
        return out

    def done(self) -> dict[int, GMRecord]:
        return self.read_records(self.dir)

    def adopt(self, donor: Path, wanted: Mapping[int, str], verify: bool = True) -> int:
        """Take the records of ``donor`` (a finished or partial folder of this lineage) whose index
        is in ``wanted`` with the same gm_id and that this build lacks; returns how many."""
        have = set(self.read_records(self.dir, verify=False))
        taken = 0
        for idx, rec in self.read_records(donor, verify=verify).items():
            if idx in have or wanted.get(idx) != rec.gm_id:
                continue
            for s in rec.shards:
                _link_or_copy(donor / s["file"], self.dir / s["file"])
            if rec.grid:
                _link_or_copy(donor / GRIDS_DIR / f"{rec.gm_id}.png", self.dir / GRIDS_DIR / f"{rec.gm_id}.png")
            atomic_write_bytes(self.dir / RECORDS_DIR / f"{idx:05d}.json", rec.to_json().encode())
            taken += 1
        return taken

    # --- writing ------------------------------------------------------------------------------
    def write_gm(self, rec: GMRecord, shard_rows: list[tuple[int, Mapping[str, list[Any]]]],
                 grid_png: bytes | None) -> GMRecord:
        """Persist one GM: its shards and grid, then its record (which marks it finished)."""
        rec.shards = [write_shard(self.dir, i, rows) for i, rows in shard_rows]
        rec.grid = grid_png is not None
        if grid_png is not None:
            atomic_write_bytes(self.dir / GRIDS_DIR / f"{rec.gm_id}.png", grid_png)
        atomic_write_bytes(self.dir / RECORDS_DIR / f"{rec.index:05d}.json", rec.to_json().encode())
        return rec

    def prune(self, n: int) -> None:
        """Drop the records, shards and grids of GMs at index >= n (adopted from a larger build),
        and any real-image shard or half-written file a finalize left behind."""
        keep_files: set[str] = set()
        keep_grids: set[str] = set()
        for idx, rec in self.read_records(self.dir, verify=False).items():
            if idx >= n:
                (self.dir / RECORDS_DIR / f"{idx:05d}.json").unlink(missing_ok=True)
                continue
            keep_files.update(s["file"] for s in rec.shards)
            if rec.grid:
                keep_grids.add(f"{rec.gm_id}.png")
        for p in (self.dir / IMAGES_DIR).iterdir():
            if f"{IMAGES_DIR}/{p.name}" not in keep_files:
                p.unlink()
        for p in (self.dir / GRIDS_DIR).iterdir():
            if p.name not in keep_grids:
                p.unlink()
        for name in (MANIFEST, "gms.parquet"):
            (self.dir / name).unlink(missing_ok=True)

    def commit(self) -> Path:
        """Move the finished staging folder (with its manifest written) to the target."""
        if not (self.dir / MANIFEST).exists():
            raise CollectionError(f"{self.dir} has no manifest yet: not a finished build")
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.out, old)
            os.replace(self.dir, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.dir, self.out)
        return self.out


def lineage_donors(out: Path, lineage: str) -> list[Path]:
    """Finished collections and partial builds beside ``out`` (and ``out`` itself) of ``lineage``."""
    out = Path(out).resolve()
    found: list[Path] = []
    if not out.parent.is_dir():
        return found
    for p in sorted(out.parent.iterdir()):
        if not p.is_dir() or p == out.parent / f".{out.name}.partial":
            continue
        try:
            if (p / MANIFEST).is_file():
                same = json.loads((p / MANIFEST).read_text()).get("lineage_key") == lineage
            elif (p / LINEAGE_FILE).is_file():
                same = json.loads((p / LINEAGE_FILE).read_text()).get("lineage") == lineage
            else:
                continue
        except (OSError, ValueError):
            continue
        if same:
            found.append(p)
    return found


__all__ = ["GMRecord", "PartialBuild", "lineage_donors"]
