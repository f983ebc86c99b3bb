"""MLServer's MLflow runtime as the serving image runs it (MLSERVER_MODEL_IMPLEMENTATION
serving_runtime.GeneratorRuntime), with bad requests answered as `mlflow models serve` answers them.

The model's own check (training/serving.py) raises an MlflowException with a 4xx code for a bad `n`, seed
or `z`; MLServer would answer any exception from `predict` with HTTP 500. This runtime raises MLServer's
InferenceError (HTTP 400) with the same one-line message instead (MLServer's inference worker puts the
error's class name before it: "mlserver.errors.InferenceError: n must be ...").

Not part of the `training` package on purpose: the model brings that package as its logged code, and a
copy imported here first would shadow it. Runs only in the serving image (mlserver is not a dependency of
the project).
"""

from mlflow.exceptions import MlflowException
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver_mlflow import MLflowRuntime


class GeneratorRuntime(MLflowRuntime):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        try:
            return await super().predict(payload)
        except MlflowException as err:
            if err.get_http_status_code() != 400:
                raise
            raise InferenceError(err.message) from None
