"""Ingest of existing collections: image folders with bad files, CSV/JSON/RED116 labels."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gmparse.data_pipeline import schema
from gmparse.data_pipeline.collection import open_collection
from gmparse.data_pipeline.ingest import IngestError, ingest_folder, read_label_table
from gmparse.data_pipeline.preprocess import decode_image

RED116_DIR = Path(__file__).resolve().parents[2] / "shared" / "red116"


def label_row(gm: str, i: int) -> dict:
    row = {"gm_id": gm, "family": "gan"}
    row.update({c: i + k for k, c in enumerate(schema.CONTINUOUS)})
    row.update({c: schema.DISCRETE[c][i % len(schema.DISCRETE[c])] for c in schema.DISCRETE_NAMES})
    row["loss_types"] = "l1;hinge" if i % 2 else "cross_entropy"
    return row


def make_folder(root: Path, gms=("gm_a", "gm_b"), with_bad=True) -> dict[str, int]:
    rng = np.random.default_rng(0)
    for gm in gms:
        d = root / gm
        d.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"ok{i}.png")
    real = root / "real"
    real.mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(real / "r0.jpg")
    if not with_bad:
        return {}
    d = root / gms[0]
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), mode="L").save(d / "gray.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8), mode="RGBA").save(d / "rgba.png")
    Image.fromarray(rng.integers(0, 65535, (32, 32), dtype=np.uint16)).save(d / "deep16.png")
    Image.fromarray(rng.integers(0, 256, (50, 30, 3), dtype=np.uint8)).save(d / "odd.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    good = (d / "ok0.png").read_bytes()
    (d / "truncated.png").write_bytes(good[: len(good) // 2])
    (d / "notes.txt").write_text("not an image")
    (d / "empty.jpg").write_bytes(b"")
    Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(d / "tiny.png")
    return {"converted": 3, "resized": 2, "skipped": 5}  # resized: odd.png and the 40x40 real photo


def test_ingest_csv_with_bad_files(tmp_path):
    root = tmp_path / "imgs"
    expected = make_folder(root)
    labels = tmp_path / "labels.csv"
    pd.DataFrame([label_row("gm_a", 0), label_row("gm_b", 1)]).to_csv(labels, index=False)
    col = ingest_folder(root, labels, tmp_path / "col", image_size=32, progress=False)
    col.verify()
    m = col.manifest
    assert m["counts"]["files_skipped"] == expected["skipped"]
    assert m["counts"]["files_converted"] == expected["converted"]
    assert m["counts"]["files_resized"] == expected["resized"]
    reasons = {Path(s["file"]).name: s["reason"] for s in m["skipped"]}
    assert set(reasons) == {"corrupt.png", "truncated.png", "notes.txt", "empty.jpg", "tiny.png"}
    assert reasons["tiny.png"].startswith("too small")
    t = col.read_images(["gm_a"]).to_pydict()
    assert len(t["image_id"]) == 3 + 4
    assert all(decode_image(b).shape == (32, 32, 3) for b in t["image"])
    g = col.gms.set_index("gm_id")
    assert g.loc["gm_b", schema.loss_column("hinge")] == 1 and g.loc["gm_a", schema.loss_column("cross_entropy")] == 1
    assert g.loc["gm_b", "norm_type"] == 1  # 'instance' by name
    assert "real" in g.index and not col.read_images(["real"]).to_pydict()["is_fake"][0]


def test_ingest_json_labels(tmp_path):
    root = tmp_path / "imgs"
    make_folder(root, with_bad=False)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({r.pop("gm_id"): r for r in [label_row("gm_a", 2), label_row("gm_b", 3)]}))
    col = ingest_folder(root, labels, tmp_path / "col", image_size=16, progress=False)
    assert col.manifest["counts"]["gms"] == 2 and col.image_size == 16


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda rows: rows[:1], r"gm_b.*no row in the label table"),
        (lambda rows: [dict(rows[0], norm_type=7), rows[1]], r"labels.csv row 1 \(gm gm_a\): norm_type=.*out of range"),
        (lambda rows: [rows[0], {k: v for k, v in rows[1].items() if k != "num_params"}], r"row 2 \(gm gm_b\): missing values \['num_params'\]"),
        (lambda rows: [rows[0], dict(rows[1], loss_types="l1;l7")], r"row 2 .*unknown loss types \['l7'\]"),
    ],
)
def test_label_errors_name_file_and_row(tmp_path, mutate, match):
    root = tmp_path / "imgs"
    make_folder(root, with_bad=False)
    labels = tmp_path / "labels.csv"
    pd.DataFrame(mutate([label_row("gm_a", 0), label_row("gm_b", 1)])).to_csv(labels, index=False)
    with pytest.raises(IngestError, match=match):
        ingest_folder(root, labels, tmp_path / "col", progress=False)
    assert not (tmp_path / "col").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["imgs", "labels.csv"]  # nothing half-written


def test_wrong_paths_are_clear(tmp_path):
    with pytest.raises(IngestError, match="does not exist"):
        read_label_table(tmp_path / "missing.csv")
    with pytest.raises(IngestError, match="image folder"):
        ingest_folder(tmp_path / "none", tmp_path / "x.csv", tmp_path / "col")


def _write_red116(tmp_path, net, loss, names):
    np.save(tmp_path / "net.npy", net)
    np.save(tmp_path / "loss.npy", loss)
    (tmp_path / "names.txt").write_text("\n".join(names))
    return tmp_path / "net.npy", tmp_path / "loss.npy", tmp_path / "names.txt"


def test_ingest_red116_matrices(tmp_path):
    labs = [schema.GMLabels({c: 10.0 * (i + 1) for c in schema.CONTINUOUS} | {"num_params": 1e6 * (i + 1)},
                            {c: i % len(schema.DISCRETE[c]) for c in schema.DISCRETE_NAMES},
                            {schema.LOSS_TYPES[i]}) for i in range(2)]
    net, loss, _ = schema.to_red116(labs)
    net_f, loss_f, names_f = _write_red116(tmp_path, net, loss, ["gm_a", "gm_b"])
    root = tmp_path / "imgs"
    make_folder(root, with_bad=False)
    col = ingest_folder(root, net_f, tmp_path / "col", image_size=32, gm_names=names_f, loss_labels=loss_f, progress=False)
    assert col.ranges == schema.RED116
    back = schema.GMLabels.from_row(col.gms.set_index("gm_id").loc["gm_b"].to_dict())
    assert back.discrete == labs[1].discrete and back.loss_types == labs[1].loss_types
    assert np.allclose(back.continuous_vector(), labs[1].continuous_vector())
    bad = net.copy()
    bad[1, 12] = 3  # up-sampling has two classes
    _write_red116(tmp_path, bad, loss, ["gm_a", "gm_b"])
    with pytest.raises(IngestError, match="net.npy: row 1"):
        read_label_table(net_f, names_f, loss_f)
    _write_red116(tmp_path, net[:, :14], loss, ["gm_a", "gm_b"])
    with pytest.raises(IngestError, match="15 values"):
        read_label_table(net_f, names_f, loss_f)
    _write_red116(tmp_path, net, loss, ["gm_a"])
    with pytest.raises(IngestError, match="1 names but 2"):
        read_label_table(net_f, names_f, loss_f)


@pytest.mark.skipif(not RED116_DIR.exists(), reason="shared RED116 ground truth not present")
def test_real_red116_label_files(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"GM_{i:03d}" for i in range(116)))
    table = read_label_table(RED116_DIR / "ground_truth_net_116_15dim.npy", names)
    assert len(table.labels) == 116
    counts = np.bincount([lab.discrete["norm_type"] for lab in table.labels.values()], minlength=4)
    assert counts.tolist() == [72, 19, 19, 6]


def test_open_ingested_collection_again(tmp_path):
    root = tmp_path / "imgs"
    make_folder(root, with_bad=False)
    labels = tmp_path / "labels.csv"
    pd.DataFrame([label_row("gm_a", 0), label_row("gm_b", 1)]).to_csv(labels, index=False)
    ingest_folder(root, labels, tmp_path / "col", image_size=32, progress=False)
    assert open_collection(tmp_path / "col").manifest["kind"] == "ingest"
