"""MLflow model packaging: the parser as a pyfunc model in the registry.

``mlflow.pyfunc.load_model("models:/gm-parser@champion").predict(images)`` takes uint8
images [N, H, W, 3] and returns one row of named hyperparameters per image. The model is
logged with the project's code (``code_paths``), so it loads without this checkout.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from data_pipeline.paths import REPO_ROOT
from data_pipeline.schema import SCHEMA_VERSION

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


class ParserPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc face of models.parser.Parser: uint8 [N, H, W, 3] images of any size, each read at
    native resolution through its tiles (the default of cv_folds and parse.py)."""

    def load_context(self, context) -> None:
        from models.parser import Parser

        self.parser = Parser.load(context.artifacts["parser"])

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        images = np.asarray(model_input)
        if images.ndim == 3:
            images = images[None]
        rows = self.parser.describe(self.parser.predict_fitted(images.astype(np.uint8)))
        return pd.DataFrame([flatten_prediction(r) for r in rows])


def any_size_signature(example: np.ndarray, output: pd.DataFrame) -> mlflow.models.ModelSignature:
    """The signature of ``example``'s output, with uint8 [N, H, W, 3] images of any H and W as input
    (the parser reads a larger image through its native-resolution tiles)."""
    from mlflow.types import Schema, TensorSpec

    inferred = mlflow.models.infer_signature(example, output)
    return mlflow.models.ModelSignature(Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, example.shape[-1]))]),
                                        inferred.outputs)


def log_parser(parser, name: str = "parser", register_as: str | None = PARSER_NAME, alias: str = CHAMPION,
               tags: dict[str, str] | None = None) -> tuple[str, str | None]:
    """Log ``parser`` into the active run; register it and point ``alias`` at the new version.

    Returns (model_uri, registered version or None).
    """
    import torch

    size = parser.config.image_size
    example = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        parser_dir = parser.save(Path(tmp) / "parser")
        wrapper = ParserPyfunc()
        wrapper.parser = parser
        output = wrapper.predict(None, example)
        del wrapper.parser
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=wrapper,
            artifacts={"parser": str(parser_dir)},
            signature=any_size_signature(example, output),
            input_example=example,
            code_paths=[str(REPO_ROOT / p) for p in ("models", "data_pipeline", "workflows")],
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy", "pandas", "pillow",
                              "scikit-learn", f"mlflow=={mlflow.__version__}"],
        )
    version = None
    if register_as:
        mv = mlflow.register_model(info.model_uri, register_as)
        client = mlflow.MlflowClient()
        all_tags = {"schema_version": SCHEMA_VERSION, "ranges": str(parser.ranges.to_dict()), **(tags or {})}
        for k, v in all_tags.items():
            client.set_model_version_tag(register_as, mv.version, k, v)
        client.set_registered_model_alias(register_as, alias, mv.version)
        version = str(mv.version)
    return info.model_uri, version
