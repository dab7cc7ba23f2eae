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


def test_a_challenger_takes_the_champion_alias_only_by_parsing_better(smoke_collection, parser_dir, sqlite_tracking,
                                                                     capsys):
    import mlflow

    from gmparse.data_pipeline.schema import Ranges
    from gmparse.models.parser import Parser
    from gmparse.workflows.lib.registry import challenge_champion, log_parser

    good = Parser.load(parser_dir)
    # the same network answering on a scale ten widths off: worse on continuous L1, equal on the rest
    off = Ranges.from_dict({k: [lo + 10 * (hi - lo), hi + 10 * (hi - lo)]
                            for k, (lo, hi) in smoke_collection.ranges.to_dict().items()})
    bad = Parser(good.model, off)
    judge = {"alias": "wide", "fit_mode": "tile", "seed": 0, "n_shuffles": 50}
    client = mlflow.MlflowClient()

    def champion() -> str:
        return str(client.get_model_version_by_alias("gm-parser", "champion").version)

    mlflow.set_experiment("test-challenge")
    with mlflow.start_run():
        _, v_bad = log_parser(bad)  # the champion
        _, v_tie = log_parser(bad, alias="wide")
        _, v_good = log_parser(good, alias="other")
    assert challenge_champion(bad, v_bad, smoke_collection, **judge) is None  # the champion itself: nothing to do
    assert "already" in capsys.readouterr().out
    challenge_champion(bad, v_tie, smoke_collection, **judge)
    assert champion() == v_bad  # a tie does not take it
    assert challenge_champion(good, v_good, None, **judge) is None
    assert champion() == v_bad and "--test-collection" in capsys.readouterr().out  # nothing to judge on
    # a version registered earlier, judged later without training: score_collection.py --challenge
    assert score_collection.main([str(smoke_collection.path), "--model", "models:/gm-parser@other", "--challenge",
                                  "--train-collection", str(smoke_collection.path), "--shuffles", "50"]) == 0
    out = capsys.readouterr().out
    assert champion() == v_good and "it is gm-parser@champion now" in out
    assert "continuous/l1" in out and "challenger" in out
    logged = mlflow.search_runs(experiment_names=["gmparse-test"])["run_id"][0]
    tables = mlflow.artifacts.load_dict(f"runs:/{logged}/tables/vs_champion.json")
    l1 = next(r for r in tables if r["metric"] == "continuous/l1")
    assert l1["fen_pn"] < l1["classical"]  # the challenger's L1 below the off-scale champion's
    disc = next(r for r in tables if r["metric"] == "discrete/acc")
    assert disc["fen_pn"] == disc["classical"]  # one network: the discrete answers agree


def test_challenge_needs_a_registered_parser(smoke_collection, parser_dir, sqlite_tracking, capsys):
    for model in (str(parser_dir), "models:/gm-parser@nobody"):
        with pytest.raises(SystemExit) as e:
            score_collection.main([str(smoke_collection.path), "--model", model, "--challenge",
                                   "--train-collection", str(smoke_collection.path)])
        assert e.value.code == 2 and "--challenge needs a registered parser" in capsys.readouterr().err
