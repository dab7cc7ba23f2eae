"""Same-source linking: were two images made by the same GM? (scikit-learn only)

Features are standardized over the set being linked (no labels used) and L2-normalized;
two images are compared by cosine similarity. ``pair_auc`` scores every pair (same GM =
positive) with ROC AUC; ``cluster_ari`` groups the mixed set into as many sources as it
holds (agglomerative, average linkage, cosine) and scores the grouping with the adjusted
Rand index against the true GMs.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _prepare(features: np.ndarray) -> np.ndarray:
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(np.asarray(features, dtype=np.float64))
    x = np.nan_to_num(x)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def subsample(labels: np.ndarray, max_items: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_items`` rows, the same share from every label (seeded)."""
    labels = np.asarray(labels)
    if len(labels) <= max_items:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(labels))[:max_items]
    return np.sort(keep)


def pair_auc(features: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of cosine similarity for 'same source' over all pairs (nan with one source)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2 or len(labels) < 3:
        return float("nan")
    x = _prepare(features)
    sim = x @ x.T
    iu = np.triu_indices(len(x), k=1)
    same = (labels[:, None] == labels[None, :])[iu]
    if same.all() or not same.any():
        return float("nan")
    return float(roc_auc_score(same, sim[iu]))


def cluster_ari(features: np.ndarray, labels: np.ndarray, n_clusters: int | None = None) -> float:
    """Adjusted Rand index of an agglomerative (average linkage, cosine) clustering into
    ``n_clusters`` (default: the number of true sources) against ``labels``."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import adjusted_rand_score

    labels = np.asarray(labels)
    k = n_clusters or len(np.unique(labels))
    if k < 2 or len(labels) <= k:
        return float("nan")
    pred = AgglomerativeClustering(n_clusters=k, metric="cosine", linkage="average").fit_predict(_prepare(features))
    return float(adjusted_rand_score(labels, pred))


def linking_metrics(features: dict[str, np.ndarray], labels: np.ndarray, max_items: int = 2000,
                    seed: int = 0) -> dict[str, dict[str, Any]]:
    """For each feature kind: pair AUC and clustering ARI on the same (sub)sample of rows."""
    idx = subsample(labels, max_items, seed)
    lab = np.asarray(labels)[idx]
    out = {}
    for name, f in features.items():
        f = np.asarray(f)[idx]
        out[name] = {"pair_auc": pair_auc(f, lab), "ari": cluster_ari(f, lab),
                     "images": int(len(lab)), "sources": int(len(np.unique(lab)))}
    return out
