"""Ingest an existing GM collection: one image folder per GM plus a label table.

Label tables: CSV or JSON (one row per GM, schema names as columns), or RED116's ``.npy``
matrices with a GM-name list. Images are converted where that is sensible (gray, RGBA,
16-bit, odd sizes are centre-cropped and resized) and skipped otherwise (corrupt,
truncated, not an image, tiny) — every skip is counted and listed in the manifest. Label
problems (a GM without labels, a row of the wrong length, a class out of range) are errors
that name the file and row, raised before anything is written.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from gmparse.data_pipeline import schema
from gmparse.data_pipeline.collection import (
    REAL_GM_ID,
    Collection,
    CollectionWriter,
    gms_row,
    image_rows,
    open_collection,
)
from gmparse.data_pipeline.preprocess import encode_png, to_rgb_uint8
from gmparse.data_pipeline.real_images import IMAGE_SUFFIXES


class IngestError(ValueError):
    """A label table or image folder that cannot be ingested as asked."""


@dataclass
class LabelTable:
    labels: dict[str, schema.GMLabels]
    families: dict[str, str]
    ranges: schema.Ranges | None  # fixed ranges (RED116) or None to fit on the data


# --- label tables -------------------------------------------------------------------------------
def _parse_discrete(value: Any, name: str, where: str) -> int:
    classes = schema.DISCRETE[name]
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        key = value.strip().lower().replace("-", "_").replace(" ", "_")
        if key not in classes:
            raise IngestError(f"{where}: {name}={value!r} is not one of {list(classes)}")
        return classes.index(key)
    try:
        idx = float(value)
    except (TypeError, ValueError):
        raise IngestError(f"{where}: {name}={value!r} is not a class") from None
    if idx != int(idx) or not 0 <= int(idx) < len(classes):
        raise IngestError(f"{where}: {name}={value!r} is out of range 0..{len(classes) - 1} ({list(classes)})")
    return int(idx)


def _parse_losses(row: dict[str, Any], where: str) -> frozenset[str]:
    if "loss_types" in row and isinstance(row["loss_types"], str | list):
        items = row["loss_types"]
        names = [s.strip().lower() for s in (items.replace("|", ";").replace(",", ";").split(";") if isinstance(items, str) else items)]
        names = [n for n in names if n]
        unknown = [n for n in names if n not in schema.LOSS_TYPES]
        if unknown:
            raise IngestError(f"{where}: unknown loss types {unknown}; known: {list(schema.LOSS_TYPES)}")
        return frozenset(names)
    out = set()
    for t in schema.LOSS_TYPES:
        for col in (schema.loss_column(t), t):
            if col in row and row[col] is not None and str(row[col]) != "nan":
                if str(row[col]).strip() not in ("0", "1", "0.0", "1.0", "True", "False", "true", "false"):
                    raise IngestError(f"{where}: {col}={row[col]!r} must be 0 or 1")
                if str(row[col]).strip() in ("1", "1.0", "True", "true"):
                    out.add(t)
                break
        else:
            raise IngestError(f"{where}: no loss-type column for {t!r} (give loss_types or loss_<name> columns)")
    return frozenset(out)


def _rows_table(rows: list[dict[str, Any]], path: Path) -> LabelTable:
    labels, families = {}, {}
    for i, row in enumerate(rows):
        where = f"{path} row {i + 1}"
        gm = str(row.get("gm_id", "")).strip()
        if not gm or gm == "nan":
            raise IngestError(f"{where}: missing gm_id")
        missing = [c for c in (*schema.CONTINUOUS, *schema.DISCRETE_NAMES) if c not in row or str(row[c]) in ("", "nan", "None")]
        if missing:
            raise IngestError(f"{where} (gm {gm}): missing values {missing}")
        try:
            cont = {c: float(row[c]) for c in schema.CONTINUOUS}
        except (TypeError, ValueError) as e:
            raise IngestError(f"{where} (gm {gm}): continuous value is not a number: {e}") from None
        disc = {c: _parse_discrete(row[c], c, f"{where} (gm {gm})") for c in schema.DISCRETE_NAMES}
        try:
            labels[gm] = schema.GMLabels(cont, disc, _parse_losses(row, f"{where} (gm {gm})"))
        except schema.SchemaError as e:
            raise IngestError(f"{where} (gm {gm}): {e}") from None
        fam = str(row.get("family", "other") or "other").strip().lower()
        if fam in ("", "nan", "none"):
            fam = "other"
        if fam not in schema.FAMILIES:
            raise IngestError(f"{where} (gm {gm}): unknown family {fam!r}; known: {list(schema.FAMILIES)}")
        if gm in labels and gm in families:
            raise IngestError(f"{where}: gm_id {gm} appears twice")
        families[gm] = fam
    return LabelTable(labels, families, None)


def read_label_table(path: str | Path, gm_names: str | Path | None = None, loss_labels: str | Path | None = None) -> LabelTable:
    """CSV / JSON / RED116 .npy label table -> labels per GM id."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"label file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        return _rows_table(df.to_dict("records"), path)
    if suffix == ".json":
        data = json.loads(path.read_text())
        rows = data if isinstance(data, list) else [dict(v, gm_id=k) for k, v in data.items()]
        return _rows_table(rows, path)
    if suffix == ".npy":
        return _red116_table(path, gm_names, loss_labels)
    raise IngestError(f"label file {path}: unsupported format {suffix!r} (use .csv, .json or RED116 .npy)")


def _red116_table(net_path: Path, gm_names: str | Path | None, loss_path: str | Path | None) -> LabelTable:
    if gm_names is None:
        raise IngestError(f"{net_path}: RED116 matrices need --gm-names (one GM folder name per matrix row)")
    names_file = Path(gm_names)
    if not names_file.is_file():
        raise IngestError(f"GM-name list {names_file} does not exist")
    names = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
    loss_file = Path(loss_path) if loss_path else net_path.with_name("ground_truth_loss_116_9dim.npy")
    if not loss_file.is_file():
        raise IngestError(f"{net_path}: loss matrix {loss_file} not found (pass --loss-labels)")
    net = np.load(net_path, allow_pickle=False)
    loss = np.load(loss_file, allow_pickle=False)
    if net.ndim != 2 or net.shape[1] != len(schema.ARCHITECTURE):
        raise IngestError(f"{net_path}: rows must have {len(schema.ARCHITECTURE)} values, got shape {list(net.shape)}")
    if loss.ndim != 2 or loss.shape[1] != len(schema.LOSS_TYPES):
        raise IngestError(f"{loss_file}: rows must have {len(schema.LOSS_TYPES)} values, got shape {list(loss.shape)}")
    if not len(names) == len(net) == len(loss):
        raise IngestError(f"{names_file}: {len(names)} names but {len(net)} architecture and {len(loss)} loss rows")
    try:
        labs = schema.from_red116(net, loss, schema.RED116, source=str(net_path))
    except schema.SchemaError as e:
        raise IngestError(str(e)) from None
    return LabelTable(dict(zip(names, labs)), dict.fromkeys(names, "other"), schema.RED116)


# --- images ---------------------------------------------------------------------------------------
def load_image_file(path: Path, size: int, min_side: int = 8) -> tuple[np.ndarray | None, str]:
    """-> (uint8 [size,size,3] or None, status); status is 'ok', 'converted', 'resized' or why skipped."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None, "not an image file"
    if path.stat().st_size == 0:
        return None, "empty file"
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = to_rgb_uint8(im)
    except Exception as e:
        return None, f"unreadable ({type(e).__name__})"
    h, w = arr.shape[:2]
    if min(h, w) < min_side:
        return None, f"too small ({w}x{h})"
    status = "ok" if mode == "RGB" else "converted"
    if h != w or h != size:
        side = min(h, w)
        y, x = (h - side) // 2, (w - side) // 2
        img = Image.fromarray(arr[y : y + side, x : x + side])
        arr = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)
        status = "resized" if status == "ok" else status
    return arr, status


def ingest_folder(root: str | Path, labels_file: str | Path, out: str | Path, image_size: int = 128,
                  gm_names: str | Path | None = None, loss_labels: str | Path | None = None,
                  overwrite: bool = False, max_rows_per_shard: int = 4096, progress: bool = True) -> Collection:
    """Turn ``root/<gm_id>/*`` (+ optional ``root/real``) and a label table into a collection."""
    from tqdm.auto import tqdm

    t0 = time.time()
    root = Path(root)
    if not root.is_dir():
        raise IngestError(f"image folder {root} does not exist")
    table = read_label_table(labels_file, gm_names, loss_labels)
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise IngestError(f"{root} has no sub-folders (expected one folder per GM)")
    unknown = [p.name for p in folders if p.name != REAL_GM_ID and p.name not in table.labels]
    if unknown:
        raise IngestError(f"{root}: GM folders {unknown} have no row in the label table {labels_file}")
    gms_present = [p.name for p in folders if p.name != REAL_GM_ID]
    unlabeled_missing = sorted(set(table.labels) - set(gms_present))

    ranges = table.ranges or schema.Ranges.fit(np.stack([table.labels[g].continuous_vector() for g in gms_present]))
    skipped: list[dict[str, str]] = []
    status_counts: Counter[str] = Counter()
    shard = 0
    with CollectionWriter(out, overwrite=overwrite) as writer:
        rows = []
        for folder in tqdm(folders, desc="ingesting GMs", unit="GM", disable=not progress):
            gm = folder.name
            files = sorted(p for p in folder.rglob("*") if p.is_file())
            pngs: list[bytes] = []
            for f in files:
                arr, status = load_image_file(f, image_size)
                status_counts[status if arr is not None else "skipped"] += 1
                if arr is None:
                    skipped.append({"file": str(f.relative_to(root)), "reason": status})
                    continue
                pngs.append(encode_png(arr))
            if not pngs:
                raise IngestError(f"{folder}: no usable image (of {len(files)} files)")
            for c in range(0, len(pngs), max_rows_per_shard):
                chunk = pngs[c : c + max_rows_per_shard]
                writer.write_shard(shard, image_rows(gm, chunk, [(image_size, image_size)] * len(chunk),
                                                     gm != REAL_GM_ID, start=c))
                shard += 1
            if gm == REAL_GM_ID:
                rows.append(gms_row(REAL_GM_ID, "real", "folder", None, ranges))
            else:
                rows.append(gms_row(gm, table.families[gm], "red116" if table.ranges else "folder",
                                    table.labels[gm], ranges, extra={"n_images": len(pngs)}))
        manifest = {
            "kind": "ingest",
            "image_size": image_size,
            "ranges": ranges.to_dict(),
            "source": {"images": str(root.resolve()), "labels": str(Path(labels_file).resolve())},
            "counts": {"files": sum(status_counts.values()), **{f"files_{k}": v for k, v in status_counts.items()}},
            "skipped": skipped,
            "labels_without_images": unlabeled_missing,
            "build_seconds": round(time.time() - t0, 1),
        }
        path = writer.commit(pd.DataFrame(rows), manifest)
    return open_collection(path)
