"""``azureml.core`` inside a deployment: only ``Model.get_model_path`` resolves (there is no workspace)."""
from .model import Model

__all__ = ["Model"]
