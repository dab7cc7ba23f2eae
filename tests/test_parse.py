"""workflows/parse.py: bad files are reported per file, models load from a directory or the
MLflow registry, local and Ray Data inference agree, JSON / table / Markdown report outputs."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmparse.models.forensics import ForensicModel, ForensicSpec
from gmparse.workflows import parse
from gmparse.workflows.lib import image_parsing

SOURCES = ["gm-a", "gm-b", "real"]


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height (the pixels are never there)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.fixture
def mixed_folder(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "images"
    (d / "sub").mkdir(parents=True)
    good = {
        "good.png": Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)),
        "sub/good.jpg": Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
        "rgba.png": Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8), mode="RGBA"),
        "gray16.png": Image.fromarray(rng.integers(0, 65535, (32, 32), dtype=np.uint16)),
    }
    for name, img in good.items():
        img.save(d / name)
    (d / "empty.png").write_bytes(b"")
    (d / "notes.txt").write_text("not an image\n")
    buf = (d / "good.png").read_bytes()
    (d / "corrupt.png").write_bytes(buf[: len(buf) // 2])
    Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(d / "tiny.png")
    _png_header_only(d / "huge.png", 100_000, 100_000)
    (d / ".hidden.png").write_bytes(b"")  # hidden files are read like any other
    (d / ".cache").mkdir()  # hidden folders and symlinked folders are listed, not searched
    (d / ".cache" / "x.png").write_bytes(buf)
    (d / "linked").symlink_to(d / "sub", target_is_directory=True)
    (d / "dangling.png").symlink_to(d / "gone.png")
    (d / "loop-a.png").symlink_to(d / "loop-b.png")
    (d / "loop-b.png").symlink_to(d / "loop-a.png")
    bad = {"empty.png": "empty", "notes.txt": "not a readable image", "corrupt.png": "corrupt",
           "tiny.png": "too small", "huge.png": "too large", ".hidden.png": "empty", ".cache": "not searched",
           "linked": "not searched", "dangling.png": "dangling symlink", "loop-a.png": "symlink loop",
           "loop-b.png": "symlink loop"}
    return d, set(good), bad


@pytest.fixture
def model_dirs(tmp_path):
    from gmparse.data_pipeline import schema
    from gmparse.models.config import ModelConfig
    from gmparse.models.parser import Parser

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ranges = schema.Ranges.from_pairs(schema.RED116_RANGES)
    # the default preset's architecture (what make run registers: an ensemble with side branches)
    parser_dir = Parser.from_config(ModelConfig.preset("default"), ranges).save(tmp_path / "parser")
    spec = ForensicSpec("fen", tuple(SOURCES), 32, fen_depth=3, fen_width=8)
    forensic_dir = ForensicModel(spec.build(), spec).save(tmp_path / "forensic")
    return parser_dir, forensic_dir


def test_read_image_reports_each_bad_file(mixed_folder):
    d, good, bad = mixed_folder
    for name in good:
        img, why = image_parsing.read_image(str(d / name))
        assert why == "" and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
    for name, reason in bad.items():
        img, why = image_parsing.read_image(str(d / name))
        assert img is None and reason in why, f"{name}: {why!r}"
    img, why = image_parsing.read_image(str(d / "missing.png"))
    assert img is None and "missing" in why
    files = image_parsing.expand_paths([str(d)])  # every entry of the folder, nothing dropped
    assert {str(f.relative_to(d)) for f in files} == good | set(bad)


def _check(results, d, good, bad, with_heads=True):
    by_name = {str(r["path"]).replace(str(d) + "/", ""): r for r in results}
    assert set(by_name) == good | set(bad)
    for name in good:
        r = by_name[name]
        assert r["status"] == "ok", r
        hp = r["hyperparameters"]
        assert set(hp["continuous"]) >= {"num_layers", "num_params"}
        assert 0.0 <= hp["discrete"]["norm_type"]["prob"] <= 1.0
        assert all(0.0 <= p <= 1.0 for p in hp["loss_types"].values())
        if with_heads:
            assert 0.0 <= r["fake_prob"] <= 1.0
            assert r["nearest_gm"]["source"] in SOURCES and len(r["nearest_gm"]["top3"]) == 3
    for name, reason in bad.items():
        assert by_name[name]["status"] == "skipped" and reason in by_name[name]["reason"]


def test_parse_folder_local_json_and_report(mixed_folder, model_dirs, tmp_path, capsys):
    d, good, bad = mixed_folder
    parser_dir, forensic_dir = model_dirs
    rc = parse.main([str(d), "--model", str(parser_dir), "--detector", str(forensic_dir), "--attributor",
                     str(forensic_dir), "--json", "--report", str(tmp_path / "report")])
    assert rc == 0
    results = json.loads(capsys.readouterr().out)
    _check(results, d, good, bad)
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"## Skipped ({len(bad)})" in md and "too small" in md and "symlink loop" in md
    figs = sorted((tmp_path / "report" / "figures").glob("*.png"))
    assert len(figs) == len(good)
    assert json.loads((tmp_path / "report" / "results.json").read_text()) == results

    rc = parse.main([str(d / "good.png"), str(d / "empty.png"), "--model", str(parser_dir), "--detector", "none",
                     "--attributor", "none"])
    out = capsys.readouterr().out
    assert rc == 0 and "skipped: empty file" in out and "architecture:" in out and "1 image(s) parsed, 1 skipped" in out


@pytest.mark.slow
def test_parse_many_images_through_ray_matches_local(mixed_folder, model_dirs, ray_session):
    d, good, bad = mixed_folder
    parser_dir, forensic_dir = model_dirs
    args = parse.get_args_parser().parse_args(["x", "--model", str(parser_dir), "--detector", str(forensic_dir),
                                               "--attributor", str(forensic_dir)])
    models, _ = image_parsing.load_models(args, d)
    paths = image_parsing.expand_paths([str(d)])
    local, mode_l = image_parsing.parse_files(paths, models, batch_size=4, ray_threshold=64)
    remote, mode_r = image_parsing.parse_files(paths, models, batch_size=4, ray_threshold=0)
    assert (mode_l, mode_r) == ("local", "ray")
    _check(remote, d, good, bad)
    assert [r["path"] for r in remote] == [r["path"] for r in local]
    for a, b in zip(local, remote):
        assert a["status"] == b["status"]
        if a["status"] == "ok":
            assert a["fake_prob"] == pytest.approx(b["fake_prob"], abs=1e-5)
            assert a["nearest_gm"]["source"] == b["nearest_gm"]["source"]


@pytest.mark.slow
def test_parse_loads_registered_models(mixed_folder, model_dirs, sqlite_tracking, capsys):
    import mlflow

    from gmparse.models.parser import Parser
    from gmparse.workflows.lib.registry import log_forensic_model, log_parser

    d, good, bad = mixed_folder
    parser_dir, forensic_dir = model_dirs
    model = ForensicModel.load(forensic_dir)
    mlflow.set_experiment("test-parse")
    with mlflow.start_run():
        log_parser(Parser.load(parser_dir))
        log_forensic_model(model, "detector", "gm-detector")
        log_forensic_model(model, "attributor", "gm-attributor")
    # logged from code: no pickled Python object in any model's artifacts, its code file instead
    from gmparse.workflows.lib.registry import PickledModelError, check_no_pickle

    for name in ("gm-parser", "gm-detector", "gm-attributor"):
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion"))
        assert not [f for f in local.rglob("*.pkl")], name
        assert "model_code_path" in (local / "MLmodel").read_text()
        check_no_pickle(local)
    # defaults: the registry champions (the default preset's architecture), the table, JSON and a report
    assert parse.main([str(d), "--json", "--report", str(d.parent / "report")]) == 0
    _check(json.loads(capsys.readouterr().out), d, good, bad)
    assert (d.parent / "report" / "report.md").is_file() and len(list((d.parent / "report" / "figures").glob("*.png"))) == len(good)
    assert parse.main([str(d)]) == 0
    assert f"{len(good)} image(s) parsed, {len(bad)} skipped" in capsys.readouterr().out
    parsed = mlflow.pyfunc.load_model("models:/gm-parser@champion").predict(
        np.random.default_rng(2).integers(0, 256, (2, 48, 40, 3), dtype=np.uint8))
    assert len(parsed) == 2 and parsed["num_layers"].notna().all()
    # a model registered before models-from-code (a pickled pyfunc): refused by check_no_pickle, while
    # parse.py still reads its weights without unpickling anything
    from gmparse.workflows.lib.registry import ParserPyfunc

    with mlflow.start_run():
        old = mlflow.pyfunc.log_model(name="old", python_model=ParserPyfunc(), artifacts={"parser": str(parser_dir)})
    old_dir = Path(mlflow.artifacts.download_artifacts(old.model_uri))
    with pytest.raises(PickledModelError, match="pickled Python object"):
        check_no_pickle(old_dir)
    assert parse.main([str(d / "good.png"), "--model", old.model_uri, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "ok"
    # the pyfunc faces work too
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    det = mlflow.pyfunc.load_model("models:/gm-detector@champion").predict(images)
    att = mlflow.pyfunc.load_model("models:/gm-attributor@champion").predict(images)
    np.testing.assert_allclose(det["fake_prob"].to_numpy(), model.predict(images)["fake_prob"], atol=1e-5)
    assert set(att["source"]) <= set(SOURCES) and att["source_prob"].between(0, 1).all()
    # an explicit model that does not exist is an error, not a silent fallback
    with pytest.raises(SystemExit) as e:
        parse.main([str(d), "--detector", "models:/no-such-model@champion"])
    assert e.value.code == 2 and "no-such-model" in capsys.readouterr().err


def test_parse_missing_parser_is_a_clear_error(tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    with pytest.raises(SystemExit) as e:
        parse.main([str(img), "--model", str(tmp_path / "nowhere")])
    assert e.value.code == 2 and "no such model directory" in capsys.readouterr().err
