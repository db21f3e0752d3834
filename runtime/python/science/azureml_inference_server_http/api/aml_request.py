"""``AMLRequest`` and ``rawhttp``, under the name azureml-inference-server-http gives them."""
from azureml.contrib.services.aml_request import AMLRequest, rawhttp

__all__ = ["AMLRequest", "rawhttp"]
