"""Forensics: linking metrics, perturbations, the forensic models' save/load, and the
workflow end to end on the smoke collection (Ray Train, MLflow runs, registry)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gmparse.data_pipeline.folds import image_split, validation_mask
from gmparse.models.constraints import ConstraintWeights
from gmparse.models.forensics import (
    FingerprintClassifier,
    ForensicModel,
    ForensicSpec,
    PlainCNN,
    fingerprint_stats,
    perturb,
    pixel_stats,
    task_loss,
)
from gmparse.workflows import forensics
from gmparse.workflows.lib.linking import cluster_ari, linking_metrics, pair_auc


def test_linking_metrics_separate_sources_and_not_noise():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    centres = rng.normal(0, 5, (4, 8))
    separable = centres[labels] + rng.normal(0, 0.3, (len(labels), 8))
    noise = rng.normal(0, 1, (len(labels), 8))
    assert pair_auc(separable, labels) > 0.99
    assert cluster_ari(separable, labels) > 0.95
    assert abs(pair_auc(noise, labels) - 0.5) < 0.1
    assert cluster_ari(noise, labels) < 0.2
    m = linking_metrics({"good": separable, "noise": noise}, labels, max_items=60)
    assert m["good"]["images"] == 60 and m["good"]["pair_auc"] > m["noise"]["pair_auc"]
    assert np.isnan(pair_auc(separable[:10], np.zeros(10)))


def test_perturbations_change_images_and_keep_shape():
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(perturb(x, "clean"), x)
    for kind in ("jpeg", "resize"):
        y = perturb(x, kind)
        assert y.shape == x.shape and y.dtype == torch.uint8
        assert (y.float() - x.float()).abs().mean() > 1.0, kind
    with pytest.raises(ValueError):
        perturb(x, "blur")


def test_models_losses_and_save_load(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    fen, cnn = FingerprintClassifier(3, 3, 8, (8, 16)), PlainCNN(3, (8, 16))
    is_fake, src = torch.tensor([0, 1, 1, 0]), torch.tensor([2, 0, 1, 2])
    for m in (fen, cnn):
        out = m(x)
        assert out["detection_logit"].shape == (4,) and out["attribution_logits"].shape == (4, 3)
        assert out["embedding"].ndim == 2
        loss, log = task_loss(out, is_fake, src, ConstraintWeights.detection(), 10.0)
        loss.backward()
        assert "detection" in log and "attribution" in log
    assert "constraints" in task_loss(fen(x), is_fake, src, None, 10.0)[1]  # FEN: constraints on
    assert "constraints" not in task_loss(cnn(x), is_fake, src, None, 10.0)[1]  # plain CNN: none
    assert fingerprint_stats(fen(x)["fingerprint"]).shape[0] == 4
    assert pixel_stats(np.zeros((2, 16, 16, 3), np.uint8)).shape == (2, 30)

    spec = ForensicSpec("fen", ("a", "b", "real"), 32, 3, 8, (8, 16))
    model = ForensicModel(spec.build(), spec)
    imgs = np.random.default_rng(0).integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    p = model.predict(imgs)
    loaded = ForensicModel.load(model.save(tmp_path / "m"))
    q = loaded.predict(imgs)
    np.testing.assert_allclose(p["fake_prob"], q["fake_prob"], atol=1e-6)
    np.testing.assert_allclose(p["source_probs"].sum(1), 1.0, atol=1e-5)
    assert loaded.sources == ["a", "b", "real"] and loaded.spec == spec

    spec = ForensicSpec("fen", ("a", "b", "real"), 32, 3, 8, (8, 16), spectral_head=True)
    model = ForensicModel(spec.build(), spec)
    heads = model.module.net
    assert heads.detection_head.spectral is not None and heads.attribution_head.stats is not None
    out = model.module(torch.randn(4, 3, 32, 32))
    assert out["embedding"].shape == (4, 16) and out["attribution_logits"].shape == (4, 3)
    out["attribution_logits"].sum().backward()  # the spectral branch reaches the FEN
    assert heads.fen.body[0].weight.grad.abs().sum() > 0
    p = model.predict(imgs)
    q = ForensicModel.load(model.save(tmp_path / "spectral")).predict(imgs)
    np.testing.assert_allclose(p["source_probs"], q["source_probs"], atol=1e-6)


def test_spec_round_trips_and_refuses_what_it_cannot_rebuild():
    spec = ForensicSpec("cnn", ["a", "real"], 32, fen_width=8)
    assert spec.cnn_widths == (8, 16, 24) and spec.sources == ("a", "real")  # defaults derived, lists frozen
    d = spec.to_dict()
    assert d["kind"] == "cnn" and d["cnn_widths"] == [8, 16, 24] and "schema_version" in d
    assert ForensicSpec.from_dict(d) == spec
    assert isinstance(spec.build(), PlainCNN)
    with pytest.raises(ValueError, match="schema"):
        ForensicSpec.from_dict({**d, "schema_version": "99.0"})
    with pytest.raises(ValueError, match="unknown forensic model kind"):
        ForensicSpec("vit", (), 32)


def test_splits_are_disjoint_and_deterministic():
    ids = np.array([f"gm/{i:06d}" for i in range(2000)])
    s = image_split(ids, 0.15, 0, test_fraction=0.2)
    assert set(s) == {"train", "val", "test"}
    assert 0.15 < (s == "test").mean() < 0.25
    assert np.array_equal(s, image_split(ids, 0.15, 0, test_fraction=0.2))
    assert not np.array_equal(s, image_split(ids, 0.15, 1, test_fraction=0.2))
    # the main job's split (no test share) is the validation mask, and a test share only takes from it
    plain = image_split(ids, 0.15, 0)
    assert set(plain) == {"train", "val"} and np.array_equal(plain == "val", validation_mask(ids, 0.15, 0))
    assert not ((s == "val") & (plain != "val")).any()


def test_bad_collection_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        forensics.main(["--collection", str(tmp_path / "missing")])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        forensics.main(["--preset", "nope"])
    assert e.value.code == 2


@pytest.mark.slow
def test_forensics_end_to_end(smoke_collection, sqlite_tracking, tmp_path, capsys):
    import mlflow
    from mlflow import MlflowClient

    rc = forensics.main(["--task", "all", "--collection", smoke_collection.path, "--storage-path",
                         str(tmp_path / "runs"), "--epochs", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    for text in ("AUC clean, unseen GMs", "AUC JPEG q75", "AUC resize x0.5", "accuracy, held-out images",
                 "pair AUC, unseen GMs", "clustering ARI", "chance 1/", "raw-pixel stats"):
        assert text in out, text

    client = MlflowClient()
    exp = client.get_experiment_by_name("gmparse-forensics")
    runs = client.search_runs([exp.experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"}
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = {r.data.tags["fold"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"fold-0", "fold-1", "final"}
    for name, run in children.items():
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "epoch"))
        assert steps == [0, 1], name
        assert "fen.train.total" in run.data.metrics and "cnn.train.total" in run.data.metrics
    f0 = children["fold-0"].data.metrics
    for key in ("test.detection.fen.auc_clean", "test.detection.cnn.auc_jpeg", "test.linking.fen.pair_auc",
                "test.linking.pixels.ari"):
        assert key in f0 and 0.0 <= f0[key] <= 1.0 or key.endswith("ari"), key
    final = children["final"]
    assert "test.attribution.fen.accuracy" in final.data.metrics
    assert "figures/confusion_attribution.png" in {a.path for a in client.list_artifacts(final.info.run_id, "figures")}
    assert "detection.auc_clean.model" in parent.data.metrics and "attribution.accuracy.other" in parent.data.metrics
    chance = 1.0 / (len(smoke_collection.fake_gms) + 1)
    assert parent.data.metrics["attribution.accuracy.other"] == pytest.approx(chance)

    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    det = mlflow.pyfunc.load_model("models:/gm-detector@champion")
    att = mlflow.pyfunc.load_model("models:/gm-attributor@champion")
    assert det.metadata.signature is not None
    d, a = det.predict(images), att.predict(images)
    assert len(d) == 3 and d["fake_prob"].between(0, 1).all()
    assert set(a["source"]) <= {*smoke_collection.fake_gms["gm_id"], "real"}
    mv = client.get_model_version_by_alias("gm-attributor", "champion")
    assert mv.tags["role"] == "attributor"


def test_balanced_class_weights_make_every_class_weigh_the_same():
    import numpy as np
    import torch

    from gmparse.models.forensics import PlainCNN, balanced_class_weights, task_loss

    counts = [10, 10, 160, 0]  # two GMs, a big real class, a class with no images
    w = balanced_class_weights(counts)
    assert w[3] == 0 and np.allclose(w[:3] * np.array(counts[:3]), 180 / 3)  # n / k per class
    model = PlainCNN(4, (4, 8)).eval()
    x, is_fake = torch.randn(6, 3, 16, 16), torch.tensor([1, 1, 0, 0, 0, 0])
    source = torch.tensor([0, 1, 2, 2, 2, 2])
    with torch.no_grad():
        out = model(x)
        plain, _ = task_loss(out, is_fake, source, None, 1.0)
        weighted, log = task_loss(out, is_fake, source, None, 1.0, torch.from_numpy(w))
    assert torch.isfinite(weighted) and not torch.isclose(plain, weighted) and "attribution" in log
