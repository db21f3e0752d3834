"""``AMLResponse``, under the name azureml-inference-server-http gives it."""
from azureml.contrib.services.aml_response import AMLResponse

__all__ = ["AMLResponse"]
