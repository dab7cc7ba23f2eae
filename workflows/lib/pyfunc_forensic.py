"""The registered detector / attributor as an MLflow model from code: MLflow runs this file to rebuild
the pyfunc (no pickle); its role comes from the logged ``model_config``."""

import mlflow

from gmparse.workflows.lib.registry import ForensicPyfunc

mlflow.models.set_model(ForensicPyfunc())
