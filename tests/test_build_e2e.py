"""The smoke zoo built end to end through Ray tasks, and the Ray Data reader over it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gmparse.data_pipeline import schema
from gmparse.data_pipeline.build import build_config, ensure_collection, summarize
from gmparse.data_pipeline.collection import REAL_GM_ID

pytestmark = pytest.mark.slow


def test_smoke_collection_covers_the_schema(smoke_collection):
    col = smoke_collection
    col.verify()
    assert col.manifest["device"] == "cpu"  # where its GMs trained (BuildConfig.gpus_per_gm 0)
    fake = col.fake_gms
    s = summarize(col)
    assert s["gms"] >= 12, s
    assert {"gan", "vae", "autoencoder", "diffusion"} <= set(fake["family"])
    assert {"autoregressive", "attack"} & set(fake["family"])
    missing_losses = [t for t, n in s["loss_types"].items() if n == 0]
    assert not missing_losses, f"loss types absent from the smoke collection: {missing_losses}"
    missing_classes = [(k, c) for k, d in s["discrete"].items() for c, n in d.items() if n == 0]
    assert not missing_classes, f"discrete classes absent: {missing_classes}"
    # measured, not declared: parameter counts differ across GMs and are all positive
    params = fake[schema.raw_column("num_params")]
    assert (params > 0).all() and params.nunique() > len(fake) // 2
    assert (fake[schema.raw_column("num_conv_layers")] > 0).any()
    norm = fake[[schema.norm_column(c) for c in schema.CONTINUOUS]].to_numpy()
    assert norm.min() >= 0 and norm.max() <= 1
    # quality gate figures are stored per GM, and a grid per GM can be looked at
    assert {"gate_improvement", "gate_attempts"} <= set(fake.columns)
    assert col.manifest["quality"]["improvement_median"] is not None
    grids = Path(col.path) / "grids"
    assert {p.stem for p in grids.glob("*.png")} == set(fake["gm_id"])
    # realism per GM, calibrated: trained GMs sit between real-vs-real and their untrained selves
    assert {"realism_swd", "realism_c2st", "realism_swd_untrained"} <= set(fake.columns)
    r = col.manifest["realism"]
    assert r["real_swd"] < r["swd"]["median"] < r["swd_untrained_median"], r
    assert (fake["realism_swd"] < fake["realism_swd_untrained"]).mean() >= 0.75
    assert set(r["swd"]["per_family"]) == set(fake["family"]) and 0.4 < r["real_c2st"] < 0.8
    real = col.read_images([REAL_GM_ID], columns=["is_fake"]).to_pydict()["is_fake"]
    assert len(real) == col.manifest["build"]["real_images"] and not any(real)
    assert {s["package"] for s in col.manifest["real_sources"]} >= {"scikit-image"}
    assert all(s["license"] for s in col.manifest["real_sources"])


def test_realism_of_a_built_collection_from_the_command_line(smoke_collection, tmp_path, capsys):
    """``build_collection.py --realism`` re-measures a collection from its own images: the
    same numbers the build recorded, up to the subsample of real images each was run with."""
    import pandas as pd

    from gmparse.workflows.build_collection import main

    out = tmp_path / "realism.csv"
    assert main(["--realism", str(smoke_collection.path), "--realism-csv", str(out)]) == 0
    assert "realism SWD" in capsys.readouterr().out
    per_gm = pd.read_csv(out).set_index("gm_id")
    fake = smoke_collection.fake_gms.set_index("gm_id")
    assert set(per_gm.index) == set(fake.index)
    both = per_gm.join(fake[["realism_swd"]])
    assert np.corrcoef(both["swd"], both["realism_swd"])[0, 1] > 0.9


def test_a_gpu_build_on_a_local_ray_without_gpus_is_refused_before_it_starts(ray_session, tmp_path, monkeypatch):
    from gmparse.data_pipeline.build import build_collection
    from gmparse.data_pipeline.collection import CollectionError

    if ray_session.cluster_resources().get("GPU", 0) > 0:
        pytest.skip("this machine's Ray has a GPU")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(CollectionError, match="--gpus-per-gm 0"):
        build_collection(build_config("smoke", gpus_per_gm=0.25), tmp_path / "col", progress=False)
    assert not (tmp_path / "col").exists()  # nothing written


def test_collection_is_reused_when_manifest_matches(smoke_collection):
    gms_file = Path(smoke_collection.path) / "gms.parquet"
    before = gms_file.stat().st_mtime_ns
    again = ensure_collection(build_config("smoke"), smoke_collection.path, progress=False)
    assert again.manifest["build_key"] == smoke_collection.manifest["build_key"]
    assert gms_file.stat().st_mtime_ns == before


def test_ray_data_reader_splits_and_normalizes(smoke_collection):
    import torch

    from gmparse.data_pipeline.preprocess import normalize
    from gmparse.data_pipeline.ray_data import image_dataset
    from gmparse.models.inputs import model_input

    col = smoke_collection
    gms = list(col.fake_gms["gm_id"][:3])
    train = image_dataset(col, gms, size=16, split="train", val_fraction=0.25).take_all()
    val = image_dataset(col, gms, size=16, split="val", val_fraction=0.25).take_all()
    n_total = 3 * col.manifest["build"]["images_per_gm"]
    assert len(train) + len(val) == n_total and len(val) > 0
    assert not {r["image_id"] for r in train} & {r["image_id"] for r in val}
    assert {r["gm_id"] for r in train} == set(gms)
    row = train[0]
    assert row["image"].shape == (16, 16, 3) and row["image"].dtype == np.uint8  # normalized on the device
    x = model_input(torch.from_numpy(np.stack([r["image"] for r in train[:4]])))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32
    assert np.array_equal(x.numpy(), normalize(np.stack([r["image"] for r in train[:4]])))
    expected = col.targets([row["gm_id"]])
    assert np.allclose(row["continuous"], expected.continuous[0]) and (row["loss"] == expected.loss[0]).all()
    real = image_dataset(col, [REAL_GM_ID], size=16).take(2)
    assert all(r["is_fake"] == 0 for r in real)


def test_training_order_mixes_gms_and_changes_each_epoch(smoke_collection):
    """Shards hold one GM each; the training order must not (see shuffle_each_epoch)."""
    from gmparse.data_pipeline.ray_data import image_dataset, shuffle_each_epoch

    col = smoke_collection
    gms = list(col.fake_gms["gm_id"])
    ds = image_dataset(col, gms, size=8).materialize()
    first = [b["gm_id"] for b in ds.iter_batches(batch_size=16)][0]
    assert len(set(first)) <= 2  # the unshuffled order: a batch is one or two GMs

    def epoch(d):
        return [list(b["gm_id"]) for b in d.iter_batches(batch_size=16)]

    shuffled = shuffle_each_epoch(ds, seed=0)
    e1, e2 = epoch(shuffled), epoch(shuffled)
    expected = len(gms) * (1 - (1 - 1 / len(gms)) ** 16)  # distinct GMs in 16 random rows
    assert np.mean([len(set(b)) for b in e1[:-1]]) >= 0.7 * expected
    assert sum(map(len, e1)) == sum(map(len, e2)) == ds.count()
    assert e1 != e2  # a new order each epoch


def test_cached_epochs_mix_gms_sample_a_share_and_repeat_run_to_run(smoke_collection):
    """The cached path (epoch_plan + epoch_batches, as workflows.lib.train_loop draws an epoch): every
    batch mixes GMs, an epoch is the asked share of the rows, each epoch differs from the last,
    and a fresh decode of the same collection gives the very same epochs (reproducible runs)."""
    from gmparse.data_pipeline.ray_data import epoch_batches, epoch_plan, image_dataset

    col = smoke_collection
    gms = list(col.fake_gms["gm_id"])

    def epochs(n: int) -> tuple[int, list[list[tuple[int, int]]]]:  # per epoch: (GM, image hash) of each row
        ds = image_dataset(col, gms, size=8).select_columns(["image", "gm_index"]).materialize()
        ds, plan = epoch_plan(ds, cached=True, seed=0, fraction=0.5, batch_size=16, num_workers=1)
        assert plan.steps == int(0.5 * ds.count()) // 16 and plan.shuffle_buffer == ds.count()
        return plan.steps, [[(int(g), hash(im.numpy().tobytes()))
                             for b in epoch_batches(ds, plan, batch_size=16, epoch=e, seed=0)
                             for g, im in zip(b["gm_index"], b["image"])] for e in range(n)]

    steps, run1 = epochs(2)
    assert epochs(2)[1] == run1  # same seed, same collection: the same images in the same order
    e1, e2 = run1
    assert len(e1) == len(e2) == steps * 16
    assert e1 != e2  # a new sample each epoch
    per_batch = [len({g for g, _ in e1[k : k + 16]}) for k in range(0, len(e1), 16)]
    expected = len(gms) * (1 - (1 - 1 / len(gms)) ** 16)  # distinct GMs in 16 random rows
    assert np.mean(per_batch) >= 0.7 * expected
