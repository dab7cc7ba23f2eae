"""Figures a person would rather look at than read: learning curves, confusion matrices,
fingerprints with their spectra per GM family."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from gmparse.data_pipeline.schema import DISCRETE, DISCRETE_NAMES, TargetArrays


def learning_curves(history: Sequence[dict[str, float]], title: str = ""):
    """Training loss terms, and per epoch the GM-level parsing score of the same model on held-out
    images of training GMs (seen), training GMs held out whole (val GMs) and the fold's unseen
    GMs: the gap between the first and the last is memorising GMs rather than parsing them."""
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for k in ("train/total", "train/parsing", "train/constraints"):
        if all(k in h for h in history):
            axes[0].plot(epochs, [h[k] for h in history], marker="o", label=k.split("/")[1])
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    sets = (("val_gm", "seen GMs, held-out images"), ("valgm_gm", "held-out training GMs (picks the epoch)"),
            ("unseen_gm", "unseen test GMs (only watched)"))
    for ax, metric, label in ((axes[1], "score", "parsing score (GM level)"),
                              (axes[2], "discrete/acc", "discrete accuracy (GM level)")):
        for prefix, name in sets:
            k = f"{prefix}/{metric}"
            if history and all(k in h for h in history):
                ax.plot(epochs, [h[k] for h in history], marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def discrete_confusion(pred_discrete: np.ndarray, targets: TargetArrays, title: str = ""):
    """One confusion matrix per discrete hyperparameter (rows true, columns predicted)."""
    from sklearn.metrics import confusion_matrix

    fig, axes = plt.subplots(1, len(DISCRETE_NAMES), figsize=(3.2 * len(DISCRETE_NAMES), 3.4))
    for j, (name, ax) in enumerate(zip(DISCRETE_NAMES, axes)):
        classes = DISCRETE[name]
        cm = confusion_matrix(targets.discrete[:, j], pred_discrete[:, j], labels=list(range(len(classes))))
        ax.imshow(cm, cmap="Blues")
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, str(v), ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(classes)), [c[:8] for c in classes], rotation=45, fontsize=7)
        ax.set_yticks(range(len(classes)), [c[:8] for c in classes], fontsize=7)
        ax.set_title(name, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def fingerprints_by_family(samples: dict[str, np.ndarray], fingerprints: dict[str, np.ndarray], title: str = ""):
    """Per family: an image (uint8 HxWx3), its fingerprint (float 3xHxW) and its log spectrum."""
    fams = list(samples)
    fig, axes = plt.subplots(3, len(fams), figsize=(2.2 * len(fams), 6.6), squeeze=False)
    for i, fam in enumerate(fams):
        fp = fingerprints[fam]
        gray = 0.299 * fp[0] + 0.587 * fp[1] + 0.114 * fp[2]
        spec = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(gray))))
        rng = np.abs(fp).max() + 1e-8
        axes[0, i].imshow(samples[fam])
        axes[1, i].imshow(np.clip(fp.transpose(1, 2, 0) / (2 * rng) + 0.5, 0, 1))
        axes[2, i].imshow(spec, cmap="magma")
        axes[0, i].set_title(fam, fontsize=9)
        for r in range(3):
            axes[r, i].axis("off")
    axes[0, 0].text(-0.1, 0.5, "image", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    axes[1, 0].text(-0.1, 0.5, "fingerprint", transform=axes[1, 0].transAxes, rotation=90, va="center", ha="right")
    axes[2, 0].text(-0.1, 0.5, "spectrum", transform=axes[2, 0].transAxes, rotation=90, va="center", ha="right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def close(fig: Any) -> None:
    plt.close(fig)


def log_figure(fig: Any, path: str) -> None:
    """Log a figure to the active MLflow run, then free it."""
    import mlflow

    mlflow.log_figure(fig, path)
    close(fig)


def heads_learning_curves(history: Sequence[dict[str, float]], title: str = ""):
    """Forensics: each model's training loss and validation score per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for n in ("fen", "cnn"):
        k = f"{n}/train/total"
        if all(k in h for h in history):
            axes[0].plot(epochs, [h[k] for h in history], marker="o", label=n)
        k = f"{n}/val_score"
        if all(k in h for h in history):
            axes[1].plot(epochs, [h[k] for h in history], marker="o", label=n)
    axes[0].set(xlabel="epoch", ylabel="training loss")
    axes[1].set(xlabel="epoch", ylabel="val score (mean of AUC and accuracy)")
    for ax in axes:
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def confusion_figure(cms: dict[str, np.ndarray], classes: list[str], title: str = ""):
    """Row-normalized confusion matrices side by side (rows true, columns predicted)."""
    k = len(classes)
    fig, axes = plt.subplots(1, len(cms), figsize=(max(4.0, 0.35 * k + 2) * len(cms), max(3.5, 0.35 * k + 1.5)),
                             squeeze=False)
    short = [c if len(c) <= 18 else c[:8] + ".." + c[-8:] for c in classes]
    for ax, (name, cm) in zip(axes[0], cms.items()):
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        if k <= 20:
            for (r, cc), v in np.ndenumerate(cm):
                ax.text(cc, r, str(v), ha="center", va="center", fontsize=6)
        fs = 6 if k <= 30 else 4
        ax.set_xticks(range(k), short, rotation=90, fontsize=fs)
        ax.set_yticks(range(k), short, fontsize=fs)
        acc = np.trace(cm) / max(cm.sum(), 1)
        ax.set_title(f"{name} (accuracy {acc:.3f})", fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
