"""GM-disjoint cross-validation folds and the held-out image split of training GMs.

The test GMs of a fold are never seen in training (the paper's protocol); folds are
stratified by family so each fold's test set spans GANs, VAEs, diffusion models, ... .
Validation uses held-out *images* of the training GMs, chosen by a seeded hash of the
image id so every worker and every rerun agrees without shipping index lists around.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gmparse.data_pipeline.collection import REAL_GM_ID


class FoldError(ValueError):
    """Folds that cannot be made (too few GMs for the requested K, ...)."""


@dataclass(frozen=True)
class Fold:
    index: int
    train_gms: tuple[str, ...]
    test_gms: tuple[str, ...]


def gm_strata(gms: pd.DataFrame) -> np.ndarray:
    """Each GM's stratum for folds and subsamples: ``family/implementation`` where the table has an
    implementation column (a missing one reads ``backbone``), else its family alone."""
    if "implementation" not in gms.columns:
        return gms["family"].astype(str).to_numpy()
    return (gms["family"].astype(str) + "/" + gms["implementation"].fillna("backbone").astype(str)).to_numpy()


def gm_folds(gms: pd.DataFrame, k: int, seed: int = 0) -> list[Fold]:
    """K GM-disjoint folds over the fake GMs of ``gms`` (real excluded), stratified by family and,
    where the table has one, implementation (a backbone-only collection: by family alone, the
    same folds as before the implementation entered)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    fake = gms[gms["gm_id"] != REAL_GM_ID].sort_values("gm_id").reset_index(drop=True)
    if k < 2:
        raise FoldError(f"need at least 2 folds, got {k}")
    if len(fake) < k:
        raise FoldError(f"{len(fake)} GMs cannot make {k} GM-disjoint folds; use --folds <= {len(fake)}")
    ids = fake["gm_id"].to_numpy()
    families = gm_strata(fake)
    _, counts = np.unique(families, return_counts=True)
    if counts.max() >= k:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # families smaller than k are spread as far as they go
            splits = list(splitter.split(ids, families))
    else:
        splits = list(KFold(n_splits=k, shuffle=True, random_state=seed).split(ids))
    return [
        Fold(i, tuple(sorted(ids[tr])), tuple(sorted(ids[te]))) for i, (tr, te) in enumerate(splits)
    ]


def holdout_fold(gms: pd.DataFrame, holdout: str) -> list[Fold]:
    """One fold whose test GMs are every GM with ``COLUMN=VALUE`` (``holdout``), trained on all
    the others: e.g. ``implementation=resnet`` asks whether a parser reads GMs written in a way
    it never saw, not only GMs with unseen knob settings."""
    column, sep, value = holdout.partition("=")
    if not sep or not column or not value:
        raise FoldError(f"--holdout wants COLUMN=VALUE (e.g. implementation=resnet), got {holdout!r}")
    fake = gms[gms["gm_id"] != REAL_GM_ID]
    if column not in fake:
        raise FoldError(f"--holdout {holdout}: the collection has no column {column!r}")
    values = fake[column].astype(str)
    test = fake["gm_id"][values == value]
    train = fake["gm_id"][values != value]
    if test.empty or train.empty:
        raise FoldError(f"--holdout {holdout}: {len(test)} GMs have it and {len(train)} do not; need both "
                        f"(values present: {sorted(values.unique())})")
    return [Fold(0, tuple(sorted(train)), tuple(sorted(test)))]


def is_validation_image(image_id: str, val_fraction: float, seed: int = 0) -> bool:
    """Deterministic held-out membership of one image (same answer on every worker)."""
    h = hashlib.blake2b(f"{seed}:{image_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64 < val_fraction


def validation_mask(image_ids: np.ndarray, val_fraction: float, seed: int = 0) -> np.ndarray:
    return np.fromiter((is_validation_image(str(i), val_fraction, seed) for i in image_ids), bool, len(image_ids))


def image_split(image_ids: np.ndarray, val_fraction: float, seed: int = 0, test_fraction: float = 0.0) -> np.ndarray:
    """The one image-level split of every job: 'train' / 'val' / 'test' per image id, by seeded
    hashes (every worker agrees). ``val`` = ``validation_mask(val_fraction, seed)`` outside the
    test images; ``test`` (forensics' held-out images; none by default) = an independent hash
    (seed + 1) below ``test_fraction``, so adding a test share never moves an image into ``val``."""
    test = validation_mask(image_ids, test_fraction, seed + 1) if test_fraction > 0 else np.zeros(len(image_ids), bool)
    val = ~test & validation_mask(image_ids, val_fraction, seed)
    return np.where(test, "test", np.where(val, "val", "train"))


def holdout_gms(gms: pd.DataFrame, train_gms: tuple[str, ...] | list[str], share: float, seed: int = 0
                ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split a fold's training GMs into (fit, held-out) GMs, family-stratified where every family
    has two or more GMs. The held-out GMs pick the epoch: unseen in training like the fold's test
    GMs, but never the test GMs themselves. ``share`` <= 0 holds out nothing."""
    if share <= 0:
        return tuple(train_gms), ()
    from sklearn.model_selection import train_test_split

    ids = sorted(train_gms)
    fam = gms.set_index("gm_id").loc[ids, "family"].to_numpy()
    _, counts = np.unique(fam, return_counts=True)
    n_val = max(1, round(share * len(ids)))
    strat = fam if counts.min() >= 2 and n_val >= len(counts) else None
    fit, val = train_test_split(ids, test_size=n_val, random_state=seed, stratify=strat)
    return tuple(sorted(fit)), tuple(sorted(val))


def inner_fold(gms: pd.DataFrame, fold: Fold, share: float, seed: int = 0) -> Fold:
    """``fold`` with ``share`` of its training GMs (held out whole, as ``holdout_gms`` splits them)
    as its test GMs and the rest as its training GMs. Settings chosen on it never touch the fold's
    own test GMs, which it no longer holds."""
    if share <= 0:
        raise FoldError(f"an inner fold needs a share of training GMs to score on, got {share}")
    fit, held = holdout_gms(gms, fold.train_gms, share, seed + 7 + fold.index)
    return Fold(fold.index, fit, held)


def subsample_gms(gms: pd.DataFrame, train_gms: tuple[str, ...] | list[str], n: int, seed: int = 0
                  ) -> tuple[str, ...]:
    """``n`` of a fold's training GMs, stratified by family and implementation: each stratum keeps
    its share (largest remainders, ties to the larger stratum), members drawn in one seeded order
    per stratum, so a smaller subsample of the same seed is a subset of a larger one (the scaling
    curve's points differ only by the GMs added). ``n`` >= len(train_gms) keeps them all."""
    ids = sorted(train_gms)
    if n >= len(ids):
        return tuple(ids)
    if n < 1:
        raise FoldError(f"cannot keep {n} training GMs")
    table = gms.set_index("gm_id").loc[ids]
    rng = np.random.default_rng(seed)
    members = {s: list(rng.permutation(np.array(g.index))) for s, g in table.groupby(gm_strata(table), sort=True)}
    sizes = {s: len(m) for s, m in members.items()}
    exact = {s: n * c / len(ids) for s, c in sizes.items()}
    quota = {s: int(np.floor(v)) for s, v in exact.items()}
    for s in sorted(exact, key=lambda s: (-(exact[s] - quota[s]), -sizes[s], s))[: n - sum(quota.values())]:
        quota[s] += 1
    return tuple(sorted(g for s, m in members.items() for g in m[: quota[s]]))
