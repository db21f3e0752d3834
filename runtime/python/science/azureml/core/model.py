"""``Model.get_model_path`` as it resolves inside an Azure ML deployment.

The deployment's models are under ``$AZUREML_MODEL_DIR`` (Plinth: ``/models``):

* several models: ``<name>/<version>/`` per model (or ``<name>/`` alone);
* one model: its files directly in the folder.

As Azure returns it, the path is the version folder's one entry (the registered file, or folder) when it
holds exactly one, else the folder itself.
"""
import json
import os

from azureml.exceptions import ModelNotFoundException, WebserviceException

_DEFAULT_ROOT = "/models"


def _root():
    return os.environ.get("AZUREML_MODEL_DIR") or _DEFAULT_ROOT


def _entries(folder):
    try:
        return sorted(e for e in os.listdir(folder) if not e.startswith("."))
    except OSError:
        return []


def _single_entry(folder):
    entries = _entries(folder)
    if len(entries) == 1:
        return os.path.join(folder, entries[0])
    return folder


def _versions(folder):
    return sorted(
        (e for e in _entries(folder) if e.isdigit() and os.path.isdir(os.path.join(folder, e))), key=int
    )


def _host_models():
    """The deployment's model names as the host knows them, or None where there is no host to ask."""
    try:
        import _host

        names = json.loads(bytes(_host.call(b"M")))
    except Exception:  # noqa: BLE001 - no door (tests, local runs), or a host fault: unknown
        return None
    if isinstance(names, list):
        return [str(n) for n in names]
    return None


def _looks_like_several(root):
    """Whether ``root`` is laid out as ``<name>/<version>/`` folders."""
    entries = _entries(root)
    return bool(entries) and all(
        os.path.isdir(os.path.join(root, e)) and _versions(os.path.join(root, e)) for e in entries
    )


class Model:
    """A registered model. Inside a deployment only ``Model.get_model_path`` is available: there is no
    workspace to query."""

    def __init__(self, workspace=None, name=None, id=None, version=None, **kwargs):
        raise WebserviceException(
            "Model(workspace, ...) needs an Azure ML workspace, which a Plinth deployment does not have; "
            "use Model.get_model_path(name) for the model's files"
        )

    @staticmethod
    def get_model_path(model_name, version=None, _workspace=None):
        """The path of model ``model_name``'s files in this deployment (the latest version when ``version``
        is None). Raises ModelNotFoundException naming the model when it is not there."""
        if model_name is None or str(model_name) == "":
            raise WebserviceException("model_name is None")
        model_name = str(model_name)
        if version is not None:
            try:
                version = int(version)
            except (TypeError, ValueError):
                raise WebserviceException(f"version should be an int, got {version!r}") from None

        root = _root()
        candidate = os.path.join(root, model_name)
        if os.path.isdir(candidate):
            versions = _versions(candidate)
            if version is not None:
                folder = os.path.join(candidate, str(version))
                if not os.path.isdir(folder):
                    found = ", ".join(versions) or "none"
                    raise ModelNotFoundException(
                        f"Model {model_name!r} version {version} not found in {candidate} (versions there: {found})"
                    )
            elif versions:
                folder = os.path.join(candidate, versions[-1])
            else:
                folder = candidate
            return _single_entry(folder)
        if os.path.isfile(candidate) and version is None:
            return candidate

        # One model: its files are the folder's own.
        if os.path.isdir(root) and not _looks_like_several(root):
            names = _host_models()
            if names is None or (model_name in names and len(names) == 1):
                return _single_entry(root)

        # Azure's last resort: a path relative to the working directory.
        if os.path.exists(model_name):
            return model_name

        names = _host_models()
        if names is None:
            names = [e for e in _entries(root) if os.path.isdir(os.path.join(root, e))]
        available = ", ".join(names) if names else "none"
        raise ModelNotFoundException(
            f"Model {model_name!r} not found in {root} (the deployment's models: {available})"
        )
