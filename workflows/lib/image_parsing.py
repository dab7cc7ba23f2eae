"""Parsing image files with saved models: what ``workflows/parse.py`` runs, in pieces others reuse.

Loading the parser, detector and attributor (an MLflow model URI or a saved directory); reading
image files so that every path given gets a result, ``ok`` or ``skipped`` with its reason (never
fatal); predicting in process or through a Ray Data actor pool; the console table and the
``--report`` folder (figures of each image's fingerprint and spectrum, report.md, results.json).
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from gmparse.models.forensics import ForensicModel
    from gmparse.models.parser import Parser

DEFAULT_PARSER = "models:/gm-parser@champion"
DEFAULT_DETECTOR = "models:/gm-detector@champion"
DEFAULT_ATTRIBUTOR = "models:/gm-attributor@champion"
MAX_PIXELS = 50_000_000  # ~7000 x 7000; PIL's decompression-bomb limit is set to this too
MAX_FILE_BYTES = 256 * 2**20
MIN_SIDE = 16
SHOW_CONTINUOUS = ("num_layers", "num_conv_layers", "num_norm_layers", "num_filters", "num_blocks", "num_params")


class ModelLoadError(RuntimeError):
    pass


# --- loading models --------------------------------------------------------------------------------
def _find_bundle(root: Path, meta_file: str) -> Path | None:
    if (root / meta_file).is_file():
        return root
    hits = sorted(root.rglob(meta_file))
    return hits[0].parent if hits else None


def resolve_model_dir(ref: str, meta_file: str, workdir: Path) -> Path:
    """A local bundle directory for ``ref`` (a directory, or an MLflow model URI to download)."""
    p = Path(ref).expanduser()
    if "://" not in ref and ":" not in ref.split("/")[0] or p.exists():
        if not p.is_dir():
            raise ModelLoadError(f"{ref}: no such model directory")
        found = _find_bundle(p, meta_file)
        if found is None:
            raise ModelLoadError(f"{ref}: no {meta_file} inside (not a saved model of this kind)")
        return found
    import mlflow

    from gmparse.workflows.lib.runtime import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=str(workdir / f"dl-{abs(hash(ref))}"))
    except Exception as e:  # MLflow raises several types for a missing name / alias / store
        raise ModelLoadError(f"{ref}: cannot load from MLflow at {tracking_uri()}: {str(e).splitlines()[0][:300]}") from None
    found = _find_bundle(Path(local), meta_file)
    if found is None:
        raise ModelLoadError(f"{ref}: the MLflow model holds no {meta_file} (not a gmparse model of this kind)")
    return found


@dataclass(frozen=True)
class LoadedModels:
    """The models a parse runs, loaded and typed (small: they travel to Ray actors as they are)."""

    parser: Parser | None = None
    detector: ForensicModel | None = None
    attributor: ForensicModel | None = None
    refs: tuple[tuple[str, str], ...] = ()  # (role, where it was loaded from)


def load_models(args: argparse.Namespace, workdir: Path) -> tuple[LoadedModels, list[str]]:
    """The parser (required) and the detector / attributor (the champions when they exist) ->
    (models, notes for the user). A saved model of another schema is an error, not a guess."""
    from gmparse.models.forensics import META_FILE, ForensicModel
    from gmparse.models.parser import META_FILE as PARSER_META
    from gmparse.models.parser import Parser

    loaded: dict[str, Any] = {}
    refs: list[tuple[str, str]] = []
    notes: list[str] = []
    roles = [("parser", args.model, DEFAULT_PARSER, PARSER_META, Parser.load),
             ("detector", args.detector, DEFAULT_DETECTOR, META_FILE, ForensicModel.load),
             ("attributor", args.attributor, DEFAULT_ATTRIBUTOR, META_FILE, ForensicModel.load)]
    for role, ref, default, meta_file, load in roles:
        if ref is None and role != "parser":
            ref, optional = default, True
        else:
            ref, optional = ref or default, False
        if ref.lower() == "none":
            continue
        try:
            loaded[role] = load(resolve_model_dir(ref, meta_file, workdir))
        except ModelLoadError as e:
            if optional:
                notes.append(f"no {role}: {e}")
                continue
            raise
        except Exception as e:
            raise ModelLoadError(f"{ref}: cannot read the {role}: {type(e).__name__}: {e}") from None
        refs.append((role, ref))
    if "attributor" in loaded and not loaded["attributor"].sources:
        notes.append("the attributor has no attribution classes; nearest GM not available")
        loaded.pop("attributor")
        refs = [r for r in refs if r[0] != "attributor"]
    return LoadedModels(**loaded, refs=tuple(refs)), notes


# --- reading files ---------------------------------------------------------------------------------
def expand_paths(paths: list[str]) -> list[Path]:
    """Every entry to report, in order: a file as given; a folder's entries, searched recursively
    and sorted. Nothing found is dropped: a dangling symlink, a symlink loop, a hidden or symlinked
    folder (listed, not searched) each come back as an entry that :func:`read_image` then skips
    with its reason."""
    out: list[Path] = []
    for s in paths:
        p = Path(s).expanduser()
        if not p.is_dir():
            out.append(p)
            continue
        found: list[Path] = []
        for root, dirs, files in os.walk(p, followlinks=False):
            searched = []
            for d in dirs:
                full = Path(root) / d
                if d.startswith(".") or full.is_symlink():
                    found.append(full)
                else:
                    searched.append(d)
            dirs[:] = searched
            found += [Path(root) / f for f in files]
        out += sorted(found)
    return out


@dataclass(frozen=True)
class ReadLimits:
    """What a file may be before it is skipped (too large, too small)."""

    max_pixels: int = MAX_PIXELS
    min_side: int = MIN_SIDE
    max_bytes: int = MAX_FILE_BYTES


def read_image(path: str, limits: ReadLimits = ReadLimits()) -> tuple[np.ndarray | None, str]:
    """-> (uint8 [H,W,3], '') or (None, why it was skipped). Never raises for a bad file."""
    from PIL import Image

    from gmparse.data_pipeline.preprocess import to_rgb_uint8

    max_pixels, max_bytes, min_side = limits.max_pixels, limits.max_bytes, limits.min_side
    Image.MAX_IMAGE_PIXELS = max_pixels
    p = Path(path)
    try:
        if p.is_symlink() and not p.exists():
            try:
                os.stat(p)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    return None, "symlink loop"
            return None, f"dangling symlink (to {os.readlink(p)})"
        if not p.exists():
            return None, "missing file"
        if p.is_dir():
            return None, "a folder, not searched (hidden, or a symlink to a folder)"
        if not p.is_file():
            return None, "not a regular file"
        size = p.stat().st_size
        if size == 0:
            return None, "empty file"
        if size > max_bytes:
            return None, f"file too large ({size / 2**20:.0f} MiB > {max_bytes / 2**20:.0f} MiB)"
        data = p.read_bytes()
    except OSError as e:
        return None, f"cannot read: {e.strerror or e}"
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > max_pixels:
                return None, f"image too large ({w}x{h} > {max_pixels} pixels)"
            if min(w, h) < min_side:
                return None, f"image too small ({w}x{h}; need >= {min_side} px a side)"
            try:
                img.load()
                arr = to_rgb_uint8(img)
            except Exception as e:
                return None, f"corrupt image ({img.format}): {str(e)[:120]}"
    except Image.DecompressionBombError as e:
        return None, f"image too large: {str(e)[:120]}"
    except Exception as e:
        return None, f"not a readable image: {type(e).__name__}: {str(e)[:120]}"
    return arr, ""


# --- prediction --------------------------------------------------------------------------------------
class ImagePredictor:
    """Paths -> one JSON-able result per path. Used in process and, for many files, as the
    predictor of ``workflows.lib.batch_inference.BatchActor``."""

    def __init__(self, models: LoadedModels, limits: ReadLimits = ReadLimits(), fit_mode: str = "tile"):
        self.limits = limits
        self.fit_mode = fit_mode
        self.parser, self.detector, self.attributor = models.parser, models.detector, models.attributor

    def predict_images(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [{} for _ in images]
        if not images:
            return rows
        if self.parser is not None:
            pred = self.parser.predict_fitted(images, self.fit_mode)  # tiles of one image: averaged
            for r, d in zip(rows, self.parser.describe(pred)):
                r["hyperparameters"] = {
                    "continuous": d["continuous_raw"],
                    "continuous_norm": d["continuous"],
                    "discrete": {k: {"class": v["class"], "prob": v["probs"][v["class"]], "probs": v["probs"]}
                                 for k, v in d["discrete"].items()},
                    "loss_types": d["loss_types"],
                    "loss_groups": d["loss_groups"],
                }
        if self.detector is not None:
            fake = self.detector.predict(images)["fake_prob"]
            for r, f in zip(rows, fake):
                r["fake_prob"] = float(f)
        if self.attributor is not None:
            probs = self.attributor.predict(images)["source_probs"]
            names = self.attributor.sources
            for r, pr in zip(rows, probs):
                top = np.argsort(-pr)[:3]
                r["nearest_gm"] = {"source": names[top[0]], "prob": float(pr[top[0]]),
                                   "top3": [[names[i], float(pr[i])] for i in top]}
        return rows

    def parse_paths(self, paths: list[str]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        ok: list[tuple[int, np.ndarray]] = []
        for p in paths:
            img, why = read_image(p, self.limits)
            r: dict[str, Any] = {"path": str(p), "status": "ok" if img is not None else "skipped"}
            if img is None:
                r["reason"] = why
            else:
                r["height"], r["width"] = int(img.shape[0]), int(img.shape[1])
                ok.append((len(results), img))
            results.append(r)
        try:
            preds = self.predict_images([im for _, im in ok])
        except Exception as e:  # a batch that fails (odd model, OOM): report per file, keep going
            preds = [{"status": "skipped", "reason": f"prediction failed: {type(e).__name__}: {e}"} for _ in ok]
        for (i, _), pr in zip(ok, preds):
            results[i].update(pr)
        return results

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = self.parse_paths([str(p) for p in batch["path"]])
        return {"index": batch["index"], "result": np.array([json.dumps(r) for r in rows], dtype=object)}


def parse_files(paths: list[Path], models: LoadedModels, batch_size: int = 32, ray_threshold: int | None = None,
                limits: ReadLimits = ReadLimits(), actors: int = 1,
                fit_mode: str = "tile") -> tuple[list[dict[str, Any]], str]:
    """-> (one result per path in input order, 'local' or 'ray'); Ray Data only for more than
    ``ray_threshold`` images (None: never)."""
    strs = [str(p) for p in paths]
    if ray_threshold is None or len(strs) <= ray_threshold:
        predictor = ImagePredictor(models, limits, fit_mode=fit_mode)
        out: list[dict[str, Any]] = []
        for i in range(0, len(strs), batch_size):
            out += predictor.parse_paths(strs[i : i + batch_size])
        return out, "local"
    import ray.data

    from gmparse.workflows.lib.batch_inference import actor_pool
    from gmparse.workflows.lib.runtime import init_ray

    init_ray()
    ds = ray.data.from_items([{"index": i, "path": p} for i, p in enumerate(strs)])
    res = actor_pool(ds, partial(ImagePredictor, models, limits, fit_mode=fit_mode), batch_size=batch_size,
                     actors=actors)
    from tqdm.auto import tqdm

    results: list[dict[str, Any] | None] = [None] * len(strs)
    with tqdm(total=len(strs), desc="parsing", unit="image") as bar:  # Ray Data's own bars are off (init_ray)
        for b in res.iter_batches(batch_size=batch_size, batch_format="numpy"):
            for i, r in zip(b["index"], b["result"]):
                results[int(i)] = json.loads(r)
            bar.update(len(b["index"]))
    missing = [strs[i] for i, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"Ray Data returned no result for {len(missing)} file(s), e.g. {missing[0]}")
    return results, "ray"  # type: ignore[return-value]


# --- output ----------------------------------------------------------------------------------------
def _fmt_num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}"


def format_table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'#':>3} {'file':40} {'size':>11} {'fake prob':>9}  {'nearest known GM (prob)':34} status"]
    for i, r in enumerate(results, 1):
        name = r["path"] if len(r["path"]) <= 40 else "..." + r["path"][-37:]
        if r["status"] != "ok":
            lines.append(f"{i:>3} {name:40} {'':>11} {'':>9}  {'':34} skipped: {r.get('reason', '')}")
            continue
        size = f"{r['width']}x{r['height']}"
        fake = f"{r['fake_prob']:.3f}" if "fake_prob" in r else "-"
        near = f"{r['nearest_gm']['source']} ({r['nearest_gm']['prob']:.2f})" if "nearest_gm" in r else "-"
        lines.append(f"{i:>3} {name:40} {size:>11} {fake:>9}  {near:34} ok")
    for i, r in enumerate(results, 1):
        hp = r.get("hyperparameters")
        if r["status"] != "ok" or not hp:
            continue
        cont = ", ".join(f"{k} {_fmt_num(hp['continuous'][k])}" for k in SHOW_CONTINUOUS)
        disc = ", ".join(f"{k} {v['class']} ({v['prob']:.2f})" for k, v in hp["discrete"].items())
        losses = sorted(hp["loss_types"].items(), key=lambda kv: -kv[1])[:4]
        lines.append(f"\n[{i}] {r['path']}")
        lines.append(f"    architecture: {cont}")
        lines.append(f"    {disc}")
        lines.append("    likely loss types: " + ", ".join(f"{t} {p:.2f}" for t, p in losses))
    n_ok = sum(r["status"] == "ok" for r in results)
    lines.append(f"\n{n_ok} image(s) parsed, {len(results) - n_ok} skipped")
    return "\n".join(lines)


def write_report(results: list[dict[str, Any]], models: LoadedModels, out: Path, max_figures: int = 200) -> Path:
    """Per-image figures (image, fingerprint, spectrum) and a Markdown summary in ``out``."""
    import torch

    from gmparse.data_pipeline.preprocess import normalize, resize
    from gmparse.workflows.lib.figures import close, fingerprints_by_family

    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    net, size = None, 64
    if models.parser is not None:  # an ensemble's fingerprint is its first member's (ParsingModel.fingerprint)
        net, size = models.parser.model.eval(), models.parser.config.image_size
    lines = ["# gmparse report", "", f"{len(results)} file(s); models: "
             + ", ".join(f"{role} `{ref}`" for role, ref in models.refs), "",
             "| # | file | size | fake prob | nearest GM | norm type | loss types (top 2) | figure |",
             "|---|---|---|---|---|---|---|---|"]
    skipped = []
    n_fig = 0
    for i, r in enumerate(results, 1):
        if r["status"] != "ok":
            skipped.append(f"- `{r['path']}`: {r.get('reason', '')}")
            continue
        fig_cell = ""
        if net is not None and n_fig < max_figures:
            img, _ = read_image(r["path"])
            if img is not None:
                small = resize(img, size)
                with torch.no_grad():
                    fp = net.fingerprint(torch.from_numpy(normalize(small[None])))[0].numpy()
                fig = fingerprints_by_family({Path(r["path"]).name[:24]: small}, {Path(r["path"]).name[:24]: fp},
                                             "")
                fname = f"figures/{i:05d}.png"
                fig.savefig(out / fname, dpi=90)
                close(fig)
                fig_cell, n_fig = f"![]({fname})", n_fig + 1
        hp = r.get("hyperparameters", {})
        norm = hp["discrete"]["norm_type"] if hp else None
        losses = sorted(hp.get("loss_types", {}).items(), key=lambda kv: -kv[1])[:2]
        cells = [str(i), f"`{r['path']}`", f"{r['width']}x{r['height']}",
                 f"{r['fake_prob']:.3f}" if "fake_prob" in r else "-",
                 f"{r['nearest_gm']['source']} ({r['nearest_gm']['prob']:.2f})" if "nearest_gm" in r else "-",
                 f"{norm['class']} ({norm['prob']:.2f})" if norm else "-",
                 ", ".join(f"{t} {p:.2f}" for t, p in losses) or "-", fig_cell]
        lines.append("| " + " | ".join(cells) + " |")
    if skipped:
        lines += ["", f"## Skipped ({len(skipped)})", "", *skipped]
    lines += ["", "Figures: the image as the parser sees it, its fingerprint (FEN residual) and the fingerprint's "
              "log spectrum.", "", "Full predictions: `results.json`."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return out / "report.md"
