"""Parquet collection format: atomic write, round-trip, verify, clear errors; folds."""

import json

import numpy as np
import pandas as pd
import pytest

from gmparse.data_pipeline import schema
from gmparse.data_pipeline.collection import (
    REAL_GM_ID,
    CollectionError,
    CollectionWriter,
    gms_row,
    image_rows,
    open_collection,
)
from gmparse.data_pipeline.folds import FoldError, gm_folds, validation_mask
from gmparse.data_pipeline.preprocess import decode_image, encode_png

FAMILIES = ["gan", "vae", "autoencoder", "diffusion", "attack"]


def make_labels(i: int) -> schema.GMLabels:
    return schema.GMLabels(
        continuous={k: float(i + j) for j, k in enumerate(schema.CONTINUOUS)},
        discrete={k: i % len(v) for k, v in schema.DISCRETE.items()},
        loss_types={schema.LOSS_TYPES[i % 10]},
    )


def write_tiny(out, n_gms=10, n_img=4, size=8):
    rng = np.random.default_rng(0)
    labs = [make_labels(i) for i in range(n_gms)]
    ranges = schema.Ranges.fit(np.stack([lab.continuous_vector() for lab in labs]))
    images = {}
    with CollectionWriter(out) as w:
        rows = []
        for i, lab in enumerate(labs):
            gm = f"gm{i:02d}"
            imgs = rng.integers(0, 256, (n_img, size, size, 3), dtype=np.uint8)
            images[gm] = imgs
            w.write_shard(i, image_rows(gm, [encode_png(x) for x in imgs], [(size, size)] * n_img, True))
            rows.append(gms_row(gm, FAMILIES[i % len(FAMILIES)], "zoo", lab, ranges, "{}"))
        real = rng.integers(0, 256, (n_img, size, size, 3), dtype=np.uint8)
        w.write_shard(n_gms, image_rows(REAL_GM_ID, [encode_png(x) for x in real], [(size, size)] * n_img, False))
        rows.append(gms_row(REAL_GM_ID, "real", "bundled", None, ranges))
        w.commit(pd.DataFrame(rows), {"image_size": size, "ranges": ranges.to_dict()})
    return labs, images


def test_roundtrip(tmp_path):
    out = tmp_path / "col"
    labs, images = write_tiny(out)
    col = open_collection(out)
    col.verify()
    assert col.manifest["counts"] == {"gms": 10, "images": 44, "shards": 11}
    assert [p.name for p in tmp_path.iterdir()] == ["col"]  # no temp folder left
    table = col.read_images(["gm03"]).to_pydict()
    assert len(table["image_id"]) == 4 and all(table["is_fake"])
    assert np.array_equal(decode_image(table["image"][1]), images["gm03"][1])
    back = schema.GMLabels.from_row(col.gms.set_index("gm_id").loc["gm03"].to_dict())
    assert back == labs[3]
    t = col.targets(["gm00", "gm09"])
    assert t.continuous.min() >= 0 and t.continuous.max() <= 1
    assert col.gms.set_index("gm_id").loc[REAL_GM_ID, "family"] == "real"


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "col"
    with pytest.raises(RuntimeError), CollectionWriter(out) as w:
        w.write_shard(0, image_rows("g", [encode_png(np.zeros((4, 4, 3), np.uint8))], [(4, 4)], True))
        raise RuntimeError("build crashed")
    assert list(tmp_path.iterdir()) == []


def test_open_errors(tmp_path):
    with pytest.raises(CollectionError, match="does not exist"):
        open_collection(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CollectionError, match="no manifest.json"):
        open_collection(tmp_path / "empty")
    out = tmp_path / "col"
    write_tiny(out)
    m = json.loads((out / "manifest.json").read_text())
    (out / "images" / "part-00001.parquet").write_bytes(b"tampered")
    with pytest.raises(CollectionError, match="part-00001"):
        open_collection(out).verify()
    m["schema_version"] = "0.1"
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CollectionError, match="schema version"):
        open_collection(out)


def test_folds_disjoint_stratified_deterministic():
    gms = pd.DataFrame({"gm_id": [f"g{i:02d}" for i in range(40)] + [REAL_GM_ID],
                        "family": [FAMILIES[i % 5] for i in range(40)] + ["real"]})
    folds = gm_folds(gms, 4, seed=1)
    assert len(folds) == 4
    all_test = [g for f in folds for g in f.test_gms]
    assert sorted(all_test) == sorted(gms["gm_id"][:40]) and REAL_GM_ID not in all_test
    fam = dict(zip(gms["gm_id"], gms["family"]))
    for f in folds:
        assert not set(f.train_gms) & set(f.test_gms)
        assert {fam[g] for g in f.test_gms} == set(FAMILIES)  # each fold spans the families
    assert folds == gm_folds(gms, 4, seed=1)
    assert folds != gm_folds(gms, 4, seed=2)
    with pytest.raises(FoldError, match="cannot make 50"):
        gm_folds(gms, 50)


def test_holdout_gms_splits_training_gms_only():
    from gmparse.data_pipeline.folds import holdout_gms

    gms = pd.DataFrame({"gm_id": [f"g{i:02d}" for i in range(40)] + [REAL_GM_ID],
                        "family": [FAMILIES[i % 5] for i in range(40)] + ["real"]})
    fold = gm_folds(gms, 4, seed=1)[0]
    fit, val = holdout_gms(gms, fold.train_gms, 0.2, seed=0)
    assert len(val) == 6 and sorted(fit + val) == sorted(fold.train_gms)
    assert not set(val) & set(fold.test_gms)  # held-out GMs never include the fold's test GMs
    fam = dict(zip(gms["gm_id"], gms["family"]))
    assert {fam[g] for g in val} == set(FAMILIES)  # stratified by family
    assert (fit, val) == holdout_gms(gms, fold.train_gms, 0.2, seed=0)
    assert holdout_gms(gms, fold.train_gms, 0.0) == (tuple(fold.train_gms), ())


def test_inner_fold_scores_on_training_gms_and_drops_the_test_gms():
    from gmparse.data_pipeline.folds import inner_fold

    gms = pd.DataFrame({"gm_id": [f"g{i:02d}" for i in range(40)] + [REAL_GM_ID],
                        "family": [FAMILIES[i % 5] for i in range(40)] + ["real"]})
    fold = gm_folds(gms, 4, seed=1)[1]
    inner = inner_fold(gms, fold, 0.25, seed=0)
    assert inner.index == fold.index and len(inner.test_gms) == 8
    assert sorted(inner.train_gms + inner.test_gms) == sorted(fold.train_gms)  # the training GMs, split
    assert not set(inner.train_gms + inner.test_gms) & set(fold.test_gms)  # the fold's test GMs gone
    assert not set(inner.train_gms) & set(inner.test_gms)
    with pytest.raises(FoldError, match="share"):
        inner_fold(gms, fold, 0.0)


def test_validation_mask_is_deterministic():
    ids = np.array([f"g/{i:06d}" for i in range(2000)], dtype=object)
    m = validation_mask(ids, 0.2, seed=3)
    assert 0.15 < m.mean() < 0.25
    assert np.array_equal(m, validation_mask(ids, 0.2, seed=3))
    assert not np.array_equal(m, validation_mask(ids, 0.2, seed=4))


def test_publish_to_uri_and_read_back(tmp_path):
    from gmparse.data_pipeline.collection import publish

    labs, images = write_tiny(tmp_path / "local")
    uri = f"file://{tmp_path / 'remote' / 'col'}"
    publish(tmp_path / "local", uri)
    col = open_collection(uri)
    col.verify()
    assert col.path == uri and all(u.startswith("file://") for u in col.shard_uris())
    t = col.read_images(["gm05"]).to_pydict()
    assert np.array_equal(decode_image(t["image"][0]), images["gm05"][0])


def test_fit_to_size_modes() -> None:
    import numpy as np
    import pytest

    from gmparse.data_pipeline.preprocess import fit_to_size

    img = np.arange(64 * 96 * 3, dtype=np.int64).reshape(64, 96, 3).astype(np.uint8)
    assert fit_to_size(img, 32, "resize").shape == (1, 32, 32, 3)
    crop = fit_to_size(img, 32, "crop")
    assert crop.shape == (1, 32, 32, 3) and (crop[0] == img[16:48, 32:64]).all()  # native pixels, centred
    tiles = fit_to_size(img, 32, "tile")
    assert tiles.shape == (6, 32, 32, 3) and (tiles[5] == img[32:64, 64:96]).all()
    assert fit_to_size(np.zeros((32 * 20, 32 * 3, 3), np.uint8), 32, "tile").shape == (24, 32, 32, 3)  # capped
    small = np.zeros((16, 16, 3), np.uint8)
    assert fit_to_size(small, 32, "crop").shape == (1, 32, 32, 3)  # smaller than the model: resized up
    with pytest.raises(ValueError, match="mode"):
        fit_to_size(img, 32, "stretch")


def test_fit_views_owner_and_sample_per_gm() -> None:
    from gmparse.data_pipeline.in_memory import sample_per_gm
    from gmparse.data_pipeline.preprocess import fit_views

    imgs = [np.zeros((64, 96, 3), np.uint8), np.ones((32, 32, 3), np.uint8)]
    views, owner = fit_views(imgs, 32, "tile")
    assert views.shape == (7, 32, 32, 3) and owner.tolist() == [0] * 6 + [1]  # 2x3 tiles, then the 32px image
    gms = np.array(["b", "a", "b", "a", "b", "c"])
    picks = sample_per_gm(gms, 2, np.random.default_rng(0))
    assert [gms[i] for i in picks] == ["a", "a", "b", "b", "c"] and len(set(picks.tolist())) == 5
    assert sample_per_gm(gms, 0, np.random.default_rng(0)).tolist() == list(range(6))


def test_target_arrays_take_and_concat() -> None:
    from gmparse.data_pipeline.schema import TargetArrays

    t = TargetArrays(np.arange(6.0).reshape(3, 2), np.arange(3)[:, None], np.eye(3, dtype=int), np.zeros((3, 1)))
    two = t.take([2, 0])
    assert two.continuous.tolist() == [[4.0, 5.0], [0.0, 1.0]] and two.discrete.ravel().tolist() == [2, 0]
    back = TargetArrays.concat([t.take([0]), t.take([1, 2])])
    assert all(np.array_equal(getattr(back, f), getattr(t, f)) for f in ("continuous", "discrete", "loss", "group"))


def test_holdout_fold_tests_on_one_implementation():
    from gmparse.data_pipeline.folds import FoldError, holdout_fold

    gms = pd.DataFrame({"gm_id": ["a", "b", "c", "d", "real"], "family": ["gan"] * 4 + ["real"],
                        "implementation": ["backbone", "resnet", "backbone", "resnet", ""]})
    (fold,) = holdout_fold(gms, "implementation=resnet")
    assert fold.test_gms == ("b", "d") and fold.train_gms == ("a", "c")  # real is in neither
    for bad, msg in (("implementation", "COLUMN=VALUE"), ("style=resnet", "no column"),
                     ("implementation=dcgan", "need both"), ("family=gan", "need both")):
        with pytest.raises(FoldError, match=msg):
            holdout_fold(gms, bad)


def test_build_key_keeps_old_collections_and_sees_implementations():
    from gmparse.data_pipeline.build_config import build_config

    base = build_config("default")
    assert build_config("default", implementations="backbone").key() == base.key()
    assert build_config("default", implementations="backbone,dcgan,resnet").key() != base.key()
    assert build_config("default", implementations="backbone, dcgan").implementation_tuple() == ("backbone", "dcgan")


def test_real_source_faces_is_one_domain_and_keeps_old_keys():
    from gmparse.data_pipeline.build import _photo_pool, build_config
    from gmparse.data_pipeline.real_images import random_crops

    base = build_config("default")
    assert build_config("default", real_source="photos").key() == base.key()  # collections built before it match
    faces_cfg = build_config("default", real_source="faces")
    assert faces_cfg.key() != base.key()
    pool = _photo_pool(faces_cfg)
    assert len(pool.photos) == 100 and all(p.shape == (25, 25, 3) and p.dtype == np.uint8 for p in pool.photos)
    assert all((p[..., 0] == p[..., 2]).all() for p in pool.photos)  # grey faces as RGB
    crops = random_crops(pool, 64, 32, seed=0)
    assert crops.shape == (64, 32, 32, 3) and crops.std() > 10  # whole faces, enlarged to the collection's size
    with pytest.raises(ValueError, match="known: \\['faces', 'photos'\\]"):
        build_config("default", real_source="cifar")  # refused before anything is built


def test_gpu_share_is_how_a_build_runs_not_what_it_builds():
    from gmparse.data_pipeline.build_config import build_config

    # the default collection since budgets are steps (2026-12: no wall-time cap decides a GM); the
    # builds before it (be0c3761, 6c855534 with independent hidden activations) are not reused
    assert build_config("default").key()[:8] == "ead2b6b5"
    assert build_config("default", hidden_act="independent").key()[:8] == "51461c26"
    with pytest.raises(ValueError, match="hidden_act"):
        build_config("default", hidden_act="shared")
    assert build_config("large").gpus_per_gm == 0.25  # the large preset is meant for GPUs
    assert build_config("large", gpus_per_gm=0.0).key() == build_config("large").key()
    assert build_config("default").gpus_per_gm == 0.0  # smoke and default: one CPU core per GM
    with pytest.raises(ValueError, match="share of one GPU"):
        build_config("large", gpus_per_gm=2.0)


def test_the_cpu_guard_and_the_size_are_not_what_a_build_is():
    """The guard (``max_gm_seconds``) never enters the key; the number of GMs enters the key but
    not the lineage, so builds of one lineage share their GMs; any other setting changes both."""
    from gmparse.data_pipeline.build_config import build_config

    base = build_config("wide")
    assert build_config("wide", max_gm_seconds=5.0).key() == base.key()
    assert build_config("wide", n_gms=640).key() != base.key()
    assert build_config("wide", n_gms=640).lineage_key() == base.lineage_key()
    for change in ({"seed": 1}, {"images_per_gm": 128}, {"family_mix": "random"}, {"implementations": "backbone"}):
        assert build_config("wide", **change).lineage_key() != base.lineage_key(), change
    assert build_config("default", family_mix="random").key() == build_config("default").key()
    with pytest.raises(ValueError, match="family_mix"):
        build_config("wide", family_mix="even")
