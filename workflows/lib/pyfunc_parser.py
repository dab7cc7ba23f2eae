"""The registered parser as an MLflow model from code: MLflow runs this file to rebuild the pyfunc
(no pickle; the weights load in ``ParserPyfunc.load_context`` with ``weights_only=True``)."""

import mlflow

from gmparse.workflows.lib.registry import ParserPyfunc

mlflow.models.set_model(ParserPyfunc())
