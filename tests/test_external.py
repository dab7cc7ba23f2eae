"""The external test collection: GMs written from their papers, labelled by the zoo's introspection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gmparse.data_pipeline.external_gms import EXTERNAL_GMS, ExternalConfig
from gmparse.data_pipeline.schema import DISCRETE
from gmparse.data_pipeline.zoo.introspect import measure_architecture


def cls(name: str, value: str) -> int:
    return DISCRETE[name].index(value)


#: what each paper's generator is, as the schema spells it
EXPECTED = {
    "ext-dcgan": {"norm_type": "batch", "last_layer_nonlinearity": "tanh", "upsampling": "transposed_conv",
                  "downsampling": "no", "skip_connection": "no", "fc": 0, "conv": 4},
    "ext-lsgan": {"norm_type": "batch", "last_layer_nonlinearity": "tanh", "upsampling": "transposed_conv",
                  "downsampling": "no", "skip_connection": "no", "fc": 1, "conv": 3},
    "ext-sngan": {"norm_type": "batch", "last_layer_nonlinearity": "tanh", "upsampling": "transposed_conv",
                  "downsampling": "no", "skip_connection": "no", "fc": 1, "conv": 4},
    "ext-wgan-gp": {"norm_type": "batch", "last_layer_nonlinearity": "tanh", "upsampling": "transposed_conv",
                    "downsampling": "no", "skip_connection": "no", "fc": 1, "conv": 3},
    "ext-mlp-vae": {"norm_type": "none", "last_layer_nonlinearity": "sigmoid", "upsampling": "nearest",
                    "downsampling": "no", "skip_connection": "no", "fc": 2, "conv": 0},
    "ext-vae": {"norm_type": "none", "last_layer_nonlinearity": "sigmoid", "upsampling": "transposed_conv",
                "downsampling": "no", "skip_connection": "no", "fc": 1, "conv": 3},
}


#: how a variant measures unlike its paper's architecture (widths and losses change no count)
VARIANT = {"ext-dcgan-x1": {"conv": 5}, "ext-dcgan-x2": {"conv": 6}, "ext-dcgan-nobn-wgan-gp": {"norm_type": "none"}}


def test_the_external_collection_spans_each_paper_at_several_settings() -> None:
    ids = [g.gm_id for g in EXTERNAL_GMS]
    assert len(ids) == len(set(ids)) >= 24
    assert {g.base for g in EXTERNAL_GMS} == set(EXPECTED) and all(g.gm_id.startswith(g.base) for g in EXTERNAL_GMS)
    for base in EXPECTED:  # every paper architecture has variants, and GAN losses vary within an architecture
        assert sum(g.base == base for g in EXTERNAL_GMS) >= 3, base
    assert len({g.loss_types for g in EXTERNAL_GMS if g.base == "ext-dcgan"}) >= 4
    labels = {}
    for g in EXTERNAL_GMS:  # no variant has its paper architecture's labels: each is another point to parse
        lab = measure_architecture(g.build().net, g.loss_types)
        labels[g.gm_id] = (tuple(lab.continuous_vector()), tuple(sorted(lab.discrete.items())), lab.loss_types)
    assert all(labels[g.gm_id] != labels[g.base] for g in EXTERNAL_GMS if g.gm_id != g.base)


@pytest.mark.parametrize("gm", EXTERNAL_GMS, ids=lambda g: g.gm_id)
def test_external_gm_trains_samples_and_measures_as_its_paper(gm) -> None:
    torch.manual_seed(0)
    model = gm.build()
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    before = [p.detach().clone() for p in model.net.parameters()]
    model.step(x)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.net.parameters()))  # it trained
    out = model.generate(4, torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 32, 32) and out.min() >= -1 and out.max() <= 1
    labels = measure_architecture(model.net, gm.loss_types)
    want = {**EXPECTED[gm.base], **VARIANT.get(gm.gm_id, {})}
    for k in ("norm_type", "last_layer_nonlinearity", "upsampling", "downsampling", "skip_connection"):
        assert labels.discrete[k] == cls(k, want[k]), (gm.gm_id, k)
    assert labels.continuous["num_fc_layers"] == want["fc"] and labels.continuous["num_conv_layers"] == want["conv"]
    assert labels.loss_types == frozenset(gm.loss_types)


def test_external_gms_share_no_zoo_module() -> None:
    from gmparse.data_pipeline.zoo import layers

    zoo_types = tuple(v for v in vars(layers).values() if isinstance(v, type) and issubclass(v, torch.nn.Module))
    for gm in EXTERNAL_GMS:
        assert not any(isinstance(m, zoo_types) for m in gm.build().net.modules()), gm.gm_id


@pytest.mark.slow
def test_external_collection_builds_and_opens(ray_session, tmp_path, monkeypatch) -> None:
    from gmparse.data_pipeline import external_gms
    from gmparse.data_pipeline.collection import open_collection
    from gmparse.data_pipeline.external_gms import (
        _save_result,
        _staging,
        build_external_collection,
        train_external_gm,
    )
    from gmparse.data_pipeline.in_memory import load_images
    from gmparse.data_pipeline.real_images import load_bundled_photos, random_crops
    from gmparse.data_pipeline.realism import RealismReference

    cfg = ExternalConfig(images_per_gm=16, real_images=64, train_crops=128, batch_size=16, min_steps=5,
                         max_steps=10, check_every=5, max_swd=1e9)
    # a build cut off after one GM: that GM's persisted result (its images marked) is taken, not retrained
    crops = random_crops(load_bundled_photos(), cfg.train_crops, cfg.image_size, seed=1)
    first = train_external_gm(EXTERNAL_GMS[0], crops, cfg, RealismReference(crops, seed=0))
    first["images"] = np.full_like(first["images"], 7)
    _save_result(_staging((tmp_path / "ext").resolve(), cfg), first)
    col = build_external_collection(tmp_path / "ext", cfg, progress=False)
    col.verify()
    assert not (tmp_path / ".ext.partial").exists()  # the staging folder goes once the collection is in place
    resumed = load_images(col, [EXTERNAL_GMS[0].gm_id])
    assert len(resumed.images) == 16 and (resumed.images == 7).all()
    again = open_collection(col.path)
    fake = again.fake_gms
    assert set(fake["gm_id"]) == {g.gm_id for g in EXTERNAL_GMS}
    assert (fake["source"] == "external").all() and (fake["train_steps"] == 5).all()
    assert {"realism_swd", "realism_c2st", "realism_swd_untrained", "paper"} <= set(fake.columns)
    assert again.manifest["kind"] == "external" and again.manifest["counts"]["gms"] == len(EXTERNAL_GMS)
    assert np.isfinite(again.manifest["realism"]["swd"]["median"])

    strict = ExternalConfig(images_per_gm=16, real_images=64, train_crops=128, batch_size=16, min_steps=5,
                            max_steps=5, check_every=5, max_swd=0.0)  # nothing is that real: a clear error, nothing written
    monkeypatch.setattr(external_gms, "EXTERNAL_GMS", EXTERNAL_GMS[:1])  # the gate fails on its first GM: no need
    #                                                                      to train all of them again to see it
    stale = _staging((tmp_path / "none").resolve(), cfg)  # another configuration's GM: not this build's
    _save_result(stale, first)
    with pytest.raises(Exception, match="realism threshold"):
        build_external_collection(tmp_path / "none", strict, progress=False)
    assert not (tmp_path / "none").exists()
    assert (stale / "build_key").read_text() == strict.key()  # emptied, then this build's own GMs
    assert not (np.load(stale / f"{EXTERNAL_GMS[0].gm_id}.npy") == 7).all()
