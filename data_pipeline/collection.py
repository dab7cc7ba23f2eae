"""On-disk format of a GM collection: gms.parquet, images/part-*.parquet, manifest.json.

A collection is written into a temporary sibling folder and renamed into place, so a
failed build leaves nothing half-written; the manifest is written last and is what marks a
collection complete. Reads go through pyarrow filesystems, so a path may also be a URI
(s3://, gs://) on a cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from gmparse.data_pipeline import schema

MANIFEST = "manifest.json"
GMS_FILE = "gms.parquet"
IMAGES_DIR = "images"
GRIDS_DIR = "grids"
REAL_GM_ID = "real"

IMAGE_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("gm_id", pa.string()),
        ("is_fake", pa.bool_()),
        ("image", pa.binary()),
        ("height", pa.int32()),
        ("width", pa.int32()),
    ]
)


class CollectionError(RuntimeError):
    """A collection that is missing, incomplete or inconsistent."""


def _fs_and_path(uri: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    uri = str(uri)
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


def is_local(uri: str | os.PathLike[str]) -> bool:
    return "://" not in str(uri) or str(uri).startswith("file://")


# --- writing ----------------------------------------------------------------------------------
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash) sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_shard(folder: Path, index: int, rows: Mapping[str, list[Any]]) -> dict[str, Any]:
    """One image shard ``images/part-<index>.parquet`` under ``folder``, written atomically."""
    table = pa.Table.from_pydict(dict(rows), schema=IMAGE_SCHEMA)
    name = f"{IMAGES_DIR}/part-{index:05d}.parquet"
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    atomic_write_bytes(folder / name, data)
    return {"file": name, "rows": table.num_rows, "sha256": hashlib.sha256(data).hexdigest()}


@dataclass
class ShardInfo:
    file: str
    rows: int
    sha256: str


class CollectionWriter:
    """Writes a collection into a temp folder; :meth:`commit` moves it into place.

    Use as a context manager: leaving the block with an exception removes the temp folder.
    """

    def __init__(self, out: str | os.PathLike[str], overwrite: bool = False):
        if not is_local(out):
            raise CollectionError(
                f"collections are built on a local or mounted path, then copied; got {out}"
            )
        self.out = Path(out).resolve()
        if self.out.exists() and not overwrite and (self.out / MANIFEST).exists():
            raise CollectionError(f"{self.out} already holds a collection (pass overwrite)")
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{uuid.uuid4().hex[:8]}"
        (self.tmp / IMAGES_DIR).mkdir(parents=True)
        (self.tmp / GRIDS_DIR).mkdir()
        self.shards: list[ShardInfo] = []
        self.overwrite = overwrite

    def __enter__(self) -> CollectionWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    def write_shard(self, index: int, rows: Mapping[str, list[Any]]) -> ShardInfo:
        """One Parquet shard of image rows (columns of IMAGE_SCHEMA), hashed."""
        info = ShardInfo(**write_shard(self.tmp, index, rows))
        self.shards.append(info)
        return info

    def write_grid(self, gm_id: str, png: bytes) -> None:
        (self.tmp / GRIDS_DIR / f"{gm_id}.png").write_bytes(png)

    def commit(self, gms: pd.DataFrame, manifest: dict[str, Any]) -> Path:
        """Write gms.parquet and the manifest, then rename the temp folder into place."""
        validate_gms_table(gms)
        gms.to_parquet(self.tmp / GMS_FILE, index=False)
        shards = sorted(self.shards, key=lambda s: s.file)
        manifest = dict(manifest)
        manifest.setdefault("schema_version", schema.SCHEMA_VERSION)
        manifest["counts"] = {
            "gms": int((gms["gm_id"] != REAL_GM_ID).sum()),
            "images": int(sum(s.rows for s in shards)),
            "shards": len(shards),
            **manifest.get("counts", {}),
        }
        manifest["shards"] = [s.__dict__ for s in shards]
        manifest["gms_sha256"] = sha256_file(self.tmp / GMS_FILE)
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if self.out.exists():
            if not self.overwrite:
                raise CollectionError(f"{self.out} appeared during the build; not overwriting")
            old = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.out, old)
            os.replace(self.tmp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.tmp, self.out)
        return self.out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def validate_gms_table(gms: pd.DataFrame) -> None:
    need = ["gm_id", "family", "source", *schema.label_columns()]
    missing = [c for c in need if c not in gms.columns]
    if missing:
        raise CollectionError(f"gms table misses columns {missing}")
    if gms["gm_id"].duplicated().any():
        raise CollectionError(f"duplicate gm_id: {sorted(gms.loc[gms['gm_id'].duplicated(), 'gm_id'])}")


def gms_row(gm_id: str, family: str, source: str, labels: schema.GMLabels | None, ranges: schema.Ranges,
            spec_json: str = "", extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One gms.parquet row; ``labels=None`` for the real-image source (all labels zero)."""
    if family not in schema.FAMILIES:
        raise schema.SchemaError(f"unknown family {family!r}; known: {list(schema.FAMILIES)}")
    row: dict[str, Any] = {"gm_id": gm_id, "family": family, "source": source, "spec": spec_json}
    if labels is None:
        row.update({c: 0 for c in schema.label_columns()})
        for c in schema.CONTINUOUS:
            row[schema.raw_column(c)] = 0.0
            row[schema.norm_column(c)] = 0.0
    else:
        row.update(labels.to_row(ranges))
    row.update(extra or {})
    return row


def image_rows(gm_id: str, images: Iterable[bytes], sizes: Iterable[tuple[int, int]], is_fake: bool,
               start: int = 0) -> dict[str, list[Any]]:
    """Column lists for a shard; image ids are ``<gm_id>/<n>`` so they are stable by seed."""
    rows: dict[str, list[Any]] = {k: [] for k in IMAGE_SCHEMA.names}
    for i, (data, (h, w)) in enumerate(zip(images, sizes), start=start):
        rows["image_id"].append(f"{gm_id}/{i:06d}")
        rows["gm_id"].append(gm_id)
        rows["is_fake"].append(is_fake)
        rows["image"].append(data)
        rows["height"].append(int(h))
        rows["width"].append(int(w))
    return rows


# --- reading ----------------------------------------------------------------------------------
@dataclass
class Collection:
    """A complete collection, opened read-only."""

    path: str
    manifest: dict[str, Any]
    gms: pd.DataFrame
    fs: pafs.FileSystem = field(repr=False)
    root: str = field(repr=False)

    @property
    def ranges(self) -> schema.Ranges:
        return schema.Ranges.from_dict(self.manifest["ranges"])

    @property
    def image_size(self) -> int:
        return int(self.manifest["image_size"])

    @property
    def fake_gms(self) -> pd.DataFrame:
        return self.gms[self.gms["gm_id"] != REAL_GM_ID].reset_index(drop=True)

    def shard_uris(self) -> list[str]:
        """Shard paths as Ray Data / pyarrow expect them (URIs kept for remote stores)."""
        base = self.path.rstrip("/")
        return [f"{base}/{s['file']}" for s in self.manifest["shards"]]

    def read_images(self, gm_ids: Iterable[str] | None = None, columns: list[str] | None = None) -> pa.Table:
        """All image rows (optionally of some GMs) as one table: for small jobs and tests."""
        import pyarrow.dataset as ds

        files = [f"{self.root}/{s['file']}" for s in self.manifest["shards"]]
        dataset = ds.dataset(files, format="parquet", filesystem=self.fs)
        flt = ds.field("gm_id").isin(list(gm_ids)) if gm_ids is not None else None
        return dataset.to_table(columns=columns, filter=flt)

    def iter_images(self) -> Iterator[pa.RecordBatch]:
        for s in self.manifest["shards"]:
            with self.fs.open_input_file(f"{self.root}/{s['file']}") as f:
                yield from pq.ParquetFile(f).iter_batches()

    def targets(self, gm_ids: Iterable[str]) -> schema.TargetArrays:
        by_id = self.gms.set_index("gm_id")
        return schema.targets_from_rows([by_id.loc[g].to_dict() for g in gm_ids])

    def verify(self) -> None:
        """Re-hash every file against the manifest; raises CollectionError on a mismatch."""
        for s in self.manifest["shards"]:
            with self.fs.open_input_stream(f"{self.root}/{s['file']}") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            if digest != s["sha256"]:
                raise CollectionError(f"{self.path}: shard {s['file']} does not match its manifest hash")


def open_collection(path: str | os.PathLike[str]) -> Collection:
    """Open a complete collection; clear errors for a wrong path or an unfinished build."""
    fs, root = _fs_and_path(path)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise CollectionError(f"collection {path} does not exist (build one with workflows/build_collection.py)")
    if info.type != pafs.FileType.Directory:
        raise CollectionError(f"collection {path} is not a directory")
    if fs.get_file_info(f"{root}/{MANIFEST}").type == pafs.FileType.NotFound:
        raise CollectionError(f"{path} has no {MANIFEST}: empty, or an unfinished build")
    with fs.open_input_stream(f"{root}/{MANIFEST}") as f:
        manifest = json.loads(f.read())
    if str(manifest.get("schema_version")) != schema.SCHEMA_VERSION:
        raise CollectionError(
            f"{path}: schema version {manifest.get('schema_version')} != {schema.SCHEMA_VERSION}; rebuild it"
        )
    with fs.open_input_file(f"{root}/{GMS_FILE}") as f:
        gms = pq.read_table(f).to_pandas()
    validate_gms_table(gms)
    if not manifest.get("shards"):
        raise CollectionError(f"collection {path} holds no images")
    public = str(path) if "://" in str(path) else root
    return Collection(public, manifest, gms, fs, root)


def label_matrix(gms: pd.DataFrame) -> dict[str, np.ndarray]:
    """The label columns of a gms table as named matrices (for metrics and baselines)."""
    t = schema.targets_from_rows(gms.to_dict("records"))
    return {"continuous": t.continuous, "discrete": t.discrete, "loss": t.loss, "group": t.group}


def publish(local: str | os.PathLike[str], uri: str) -> str:
    """Copy a built local collection to object storage (s3://, gs://), manifest last.

    Readers treat a collection without a manifest as unfinished, so a crash mid-upload is
    never mistaken for a complete collection.
    """
    local = Path(local).resolve()
    fs, root = _fs_and_path(uri)
    fs.create_dir(root, recursive=True)
    for p in sorted(local.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(local).as_posix()
            fs.create_dir(f"{root}/{Path(rel).parent.as_posix()}".rstrip("/."), recursive=True)
            pafs.copy_files(str(p), f"{root}/{rel}", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    pafs.copy_files(str(local / MANIFEST), f"{root}/{MANIFEST}", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)
    return uri
