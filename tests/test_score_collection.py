"""workflows/score_collection.py: a saved or registered parser scored on every GM of a collection."""

from __future__ import annotations

import pytest

from gmparse.workflows import score_collection

pytestmark = pytest.mark.slow


@pytest.fixture
def parser_dir(smoke_collection, tmp_path):
    import torch

    from gmparse.models.config import ModelConfig
    from gmparse.models.parser import Parser

    torch.manual_seed(0)
    # the default preset's architecture: what make run registers (an ensemble with side branches)
    return Parser.from_config(ModelConfig.preset("default"), smoke_collection.ranges).save(tmp_path / "parser")


def test_registered_parser_scores_a_collection(smoke_collection, parser_dir, sqlite_tracking, capsys):
    import mlflow

    from gmparse.models.parser import Parser
    from gmparse.workflows.lib.registry import log_parser

    mlflow.set_experiment("test-score")
    with mlflow.start_run():
        log_parser(Parser.load(parser_dir), tags={"collection": str(smoke_collection.path)})
    # the champion, its training collection read from the registered version's tag
    assert score_collection.registered_collection("models:/gm-parser@champion") == str(smoke_collection.path)
    assert score_collection.main([str(smoke_collection.path), "--shuffles", "50"]) == 0
    out = capsys.readouterr().out
    assert f"trained on {smoke_collection.path}" in out
    for row in ("continuous/l1", "discrete/acc", "loss/auc", "FEN+PN", "classic", "random"):
        assert row in out
    runs = mlflow.search_runs(experiment_names=["gmparse-test"])
    assert len(runs) == 1 and runs["params.test_collection"][0] == str(smoke_collection.path)


def test_bad_paths_are_clear_errors(smoke_collection, parser_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        score_collection.main([str(tmp_path / "nowhere"), "--model", str(parser_dir),
                               "--train-collection", str(smoke_collection.path)])
    assert e.value.code == 2 and "nowhere" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        score_collection.main([str(smoke_collection.path), "--model", str(tmp_path / "no-model"),
                               "--train-collection", str(smoke_collection.path)])
    assert e.value.code == 2 and "no such model directory" in capsys.readouterr().err
