"""MLflow model packaging: every registered model (the parser, the detector, the attributor) as a pyfunc.

``mlflow.pyfunc.load_model("models:/gm-parser@champion").predict(images)`` takes uint8
images [N, H, W, 3] and returns one row of named hyperparameters per image; ``gm-detector`` a
fake probability per image, ``gm-attributor`` the nearest known GM too. Each model is logged
with the project's code (``code_paths``: a ``gmparse/`` folder holding the three packages), so it
loads without this checkout or an installed gmparse.

Models from code, not pickles: MLflow rebuilds each pyfunc by running a short file of this
package (``pyfunc_parser.py`` / ``pyfunc_forensic.py``, MLflow's models-from-code) and the
weights are plain tensors read with ``torch.load(weights_only=True)``. Nothing a registry holds
is unpickled on load, so write access to a shared registry does not mean running code on every
machine that loads ``gm-parser@champion``. Models registered before this (2026-12-02) carry a
``python_model.pkl``: :func:`check_no_pickle` refuses them with a message, and ``parse.py`` and
``score_collection.py`` still read their weights (they never unpickle).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from gmparse.data_pipeline.paths import PACKAGES
from gmparse.data_pipeline.schema import SCHEMA_VERSION

PARSER_NAME = "gm-parser"
CHAMPION = "champion"


def flatten_prediction(row: dict[str, Any]) -> dict[str, Any]:
    """Parser.describe() row -> flat columns: raw value, normalized value, class and probabilities."""
    flat: dict[str, Any] = {}
    for k, v in row["continuous_raw"].items():
        flat[k] = v
    for k, v in row["continuous"].items():
        flat[f"{k}_norm"] = v
    for k, d in row["discrete"].items():
        flat[k] = d["class"]
        flat[f"{k}_prob"] = d["probs"][d["class"]]
    for t, p in row["loss_types"].items():
        flat[f"loss_{t}_prob"] = p
    for g, p in row["loss_groups"].items():
        flat[f"group_{g}_prob"] = p
    return flat


def as_images(model_input: Any) -> np.ndarray:
    """A pyfunc's input as uint8 [N, H, W, 3] (one [H, W, 3] image becomes a batch of one)."""
    images = np.asarray(model_input)
    return (images[None] if images.ndim == 3 else images).astype(np.uint8)


class ParserPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc face of models.parser.Parser: uint8 [N, H, W, 3] images of any size, each read at
    native resolution through its tiles (the default of cv_folds and parse.py)."""

    def load_context(self, context) -> None:
        from gmparse.models.parser import Parser

        self.parser = Parser.load(context.artifacts["parser"])

    def predict(self, context, model_input: np.ndarray, params: dict[str, Any] | None = None) -> pd.DataFrame:
        rows = self.parser.describe(self.parser.predict_fitted(as_images(model_input)))
        return pd.DataFrame([flatten_prediction(r) for r in rows])


def any_size_signature(example: np.ndarray, output: pd.DataFrame) -> mlflow.models.ModelSignature:
    """The signature of ``example``'s output, with uint8 [N, H, W, 3] images of any H and W as input
    (the parser reads a larger image through its native-resolution tiles)."""
    from mlflow.types import Schema, TensorSpec

    inferred = mlflow.models.infer_signature(example, output)
    return mlflow.models.ModelSignature(Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, example.shape[-1]))]),
                                        inferred.outputs)


class ForensicPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc face of models.forensics.ForensicModel: uint8 [N,H,W,3] -> a table per image.

    role 'detector': fake_prob; role 'attributor': source, source_prob, fake_prob.
    """

    ROLES = ("detector", "attributor")

    def __init__(self, role: str = "detector") -> None:
        self.role = self._checked(role)

    @classmethod
    def _checked(cls, role: str) -> str:
        if role not in cls.ROLES:
            raise ValueError(f"role must be detector or attributor, got {role!r}")
        return role

    def load_context(self, context) -> None:
        from gmparse.models.forensics import ForensicModel

        self.role = self._checked((context.model_config or {}).get("role", self.role))  # the role it was logged as
        self.model = ForensicModel.load(context.artifacts["forensic"])

    def predict(self, context, model_input: np.ndarray, params: dict[str, Any] | None = None) -> pd.DataFrame:
        out = self.model.predict(as_images(model_input))
        df = pd.DataFrame({"fake_prob": out["fake_prob"].astype(np.float64)})
        if self.role == "attributor":
            if "source_probs" not in out:
                raise ValueError("this forensic model has no attribution head")
            probs = out["source_probs"]
            df.insert(0, "source_prob", probs.max(axis=1).astype(np.float64))
            df.insert(0, "source", [self.model.sources[i] for i in probs.argmax(axis=1)])
        return df


def package_tree(folder: Path) -> Path:
    """``folder/gmparse/{data_pipeline,models,workflows}``: the installed packages copied under the
    namespace they import by, for ``code_paths`` (MLflow puts the folder holding ``gmparse`` on the
    loading process's ``sys.path``)."""
    root = Path(folder) / "gmparse"
    for name in PACKAGES:
        src = Path(importlib.import_module(f"gmparse.{name}").__file__).parent
        shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


#: the models-from-code files MLflow runs to rebuild each pyfunc (each calls mlflow.models.set_model)
MODEL_CODE = {"parser": Path(__file__).with_name("pyfunc_parser.py"),
              "forensic": Path(__file__).with_name("pyfunc_forensic.py")}


class PickledModelError(RuntimeError):
    """A logged model whose pyfunc is a pickled Python object (loading it would run that pickle)."""


def check_no_pickle(model_dir: str | Path) -> None:
    """Refuse a downloaded MLflow model whose pyfunc is a pickled Python object (the models this
    project registered before 2026-12-02), with what to do instead."""
    import yaml

    conf = yaml.safe_load((Path(model_dir) / "MLmodel").read_text()).get("flavors", {}).get("python_function", {})
    if conf.get("python_model") and not conf.get("model_code_path"):
        raise PickledModelError(
            f"{model_dir}: this model's pyfunc is a pickled Python object ({conf['python_model']}); loading it "
            "with mlflow.pyfunc.load_model would run that pickle. Read its weights instead (workflows/parse.py "
            "and workflows/score_collection.py do, with torch.load(weights_only=True)), or register it again "
            "from code (retrain, or log_parser(Parser.load(<its artifacts/parser>)))")


@contextlib.contextmanager
def _event_lines_off() -> Iterator[None]:
    """MLflow prints "Successfully registered model ..." and "Created version ..." through its event
    stream, not a logger; keep them off the console when MLflow's logging level is WARNING or
    above (``runtime.quiet_console``; ``--verbose`` keeps them). The job prints its own line."""
    import os

    from mlflow.utils import logging_utils

    if os.environ.get("MLFLOW_LOGGING_LEVEL", "INFO").upper() not in ("WARNING", "ERROR", "CRITICAL"):
        yield
        return
    stream = logging_utils.MLFLOW_LOGGING_STREAM
    was = stream.enabled
    stream.enabled = False
    try:
        yield
    finally:
        stream.enabled = was


def _log_and_register(wrapper: mlflow.pyfunc.PythonModel, loaded: str, model: Any, bundle_name: str, size: int,
                      name: str, register_as: str | None, alias: str, tags: dict[str, str],
                      any_size: bool = False, model_config: dict[str, Any] | None = None) -> tuple[str, str | None]:
    """Save ``model`` (it has ``save(dir)``), log it into the active run as a model from code (the
    file ``MODEL_CODE[bundle_name]`` rebuilds ``wrapper``'s class, ``model_config`` its settings)
    with the project's code, an example and a signature measured on that example by ``wrapper``;
    register it with ``tags`` and point ``alias`` at the new version. ``loaded`` is the attribute
    ``load_context`` sets. Returns (model_uri, version or None)."""
    import torch

    example = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = model.save(Path(tmp) / bundle_name)
        setattr(wrapper, loaded, model)
        output = wrapper.predict(None, example)
        delattr(wrapper, loaded)
        info = mlflow.pyfunc.log_model(
            name=name, python_model=str(MODEL_CODE[bundle_name]), model_config=model_config,
            artifacts={bundle_name: str(bundle)},
            signature=(any_size_signature if any_size else mlflow.models.infer_signature)(example, output),
            input_example=example,
            code_paths=[str(package_tree(Path(tmp) / "code"))],
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy", "pandas", "pillow",
                              "scikit-learn", "torchvision", f"mlflow=={mlflow.__version__}"],
        )
    version = None
    if register_as:
        with _event_lines_off():
            mv = mlflow.register_model(info.model_uri, register_as)
        client = mlflow.MlflowClient()
        for k, v in {"schema_version": SCHEMA_VERSION, **tags}.items():
            client.set_model_version_tag(register_as, mv.version, k, str(v))
        client.set_registered_model_alias(register_as, alias, mv.version)
        version = str(mv.version)
    return info.model_uri, version


def log_parser(parser, name: str = "parser", register_as: str | None = PARSER_NAME, alias: str = CHAMPION,
               tags: dict[str, str] | None = None) -> tuple[str, str | None]:
    """Log ``parser`` into the active run; register it and point ``alias`` at the new version.

    Returns (model_uri, registered version or None).
    """
    return _log_and_register(ParserPyfunc(), "parser", parser, "parser", parser.config.image_size, name,
                             register_as, alias, {"ranges": str(parser.ranges.to_dict()), **(tags or {})},
                             any_size=True)


def log_forensic_model(model, role: str, register_as: str | None, alias: str = CHAMPION,
                       tags: dict[str, str] | None = None) -> tuple[str, str | None]:
    """Log a ``ForensicModel`` as the ``role`` pyfunc (detector or attributor) into the active run
    (artifact name = role), register it and point ``alias`` at the new version."""
    return _log_and_register(ForensicPyfunc(role), "model", model, "forensic", model.image_size, role, register_as,
                             alias, {"role": role, "kind": model.spec.kind, "sources": json.dumps(model.sources),
                                     **(tags or {})}, model_config={"role": role})


def challenge_champion(parser, version: str, test_col, *, alias: str, fit_mode: str, seed: int,
                       n_shuffles: int) -> tuple[list[dict[str, Any]], str] | None:
    """``gm-parser`` version ``version`` (``parser``, registered under ``alias``) takes
    ``champion`` too, what ``parse.py`` loads by default, only when it parses the GMs of
    ``test_col`` (written elsewhere, on neither parser's training collection) better than the
    champion (``evaluation.head_to_head``: a higher parsing score); with no champion yet, it is it.

    Prints the verdict; returns the head-to-head (rows, text) to log, or None when nothing was
    compared (no champion yet, already the champion, or no ``test_col`` to judge on)."""
    from gmparse.models.parser import META_FILE, Parser
    from gmparse.workflows.lib.evaluation import head_to_head
    from gmparse.workflows.lib.image_parsing import resolve_model_dir

    client = mlflow.MlflowClient()
    try:
        champ = client.get_model_version_by_alias(PARSER_NAME, CHAMPION)
    except mlflow.exceptions.MlflowException:
        champ = None
    if champ is None:
        client.set_registered_model_alias(PARSER_NAME, CHAMPION, version)
        print(f"no {PARSER_NAME}@{CHAMPION} yet: version {version} is it", flush=True)
        return None
    if str(champ.version) == str(version):
        print(f"version {version} is {PARSER_NAME}@{CHAMPION} already", flush=True)
        return None
    if test_col is None:
        print(f"{PARSER_NAME}@{CHAMPION} stays version {champ.version}: a parser of another alias takes it only by "
              f"parsing GMs written elsewhere better: build them (build_collection.py --external), then judge it with "
              f"score_collection.py PATH --model models:/{PARSER_NAME}/{version} --challenge (or cv_folds.py "
              f"--test-collection PATH)", flush=True)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        champion = Parser.load(resolve_model_dir(f"models:/{PARSER_NAME}/{champ.version}", META_FILE, Path(tmp)))
    rows, text, wins = head_to_head(parser, champion, test_col, fit_mode=fit_mode, seed=seed, n_shuffles=n_shuffles)
    print(f"\n{PARSER_NAME} version {version} (@{alias}) against @{CHAMPION} (version {champ.version}) on every "
          f"GM of {test_col.path} (continuous values on its scale; p paired: GMs swapped at random):\n{text}")
    if wins:
        client.set_registered_model_alias(PARSER_NAME, CHAMPION, version)
        print(f"version {version} parses them better (parsing score): it is {PARSER_NAME}@{CHAMPION} now", flush=True)
    else:
        print(f"{PARSER_NAME}@{CHAMPION} stays version {champ.version}: version {version}'s parsing score there is not "
              "higher", flush=True)
    return rows, text
