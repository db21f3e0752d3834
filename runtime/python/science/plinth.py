"""Plinth for Python entry scripts (score.py) run by the sandboxed CPython with numpy, pandas, scipy and
scikit-learn (the same API as the componentize-py SDK, over the host door).

A score.py is written exactly as for Azure ML: ``init()`` runs once, ``run(raw_data)`` per request and
returns anything ``json.dumps`` accepts (numpy arrays and pandas frames included). From it::

    import plinth
    out = plinth.infer("diabetes", {"X": [[...10 floats...]]})   # -> {"variable": [[...]]}
    plinth.log("scored")                                          # to the service log, with the request id
    raise plinth.BadRequest("field 'data' is missing")           # the caller gets a 400

Model files are read-only under ``plinth.MODEL_DIR`` (``/models``, also ``$AZUREML_MODEL_DIR``).
"""
import json

# The codec both runtimes of this module share: plugins/sdk-python/_plinth_tensors.py, embedded beside
# this file by runtime/build.rs.
from _plinth_tensors import BadRequest, Tensor, encode, nest

MODEL_DIR = "/models"

__all__ = ["MODEL_DIR", "BadRequest", "Tensor", "infer", "models", "log"]


def _door(frame):
    import _host

    return bytes(_host.call(frame))


def infer(model, inputs):
    """Runs one of the deployment's ONNX models. ``inputs`` maps input names to nested lists, numpy arrays
    (float32 -> FP32, float64 -> FP64, int64 -> INT64, int32 -> INT32, bool -> BOOL, str/object -> BYTES)
    or Tensor; returns a dict of output name -> nested lists."""
    tensors = [encode(str(name), value) for name, value in inputs.items()]
    request = json.dumps({"model": str(model), "inputs": tensors})
    answer = json.loads(_door(b"I" + request.encode("utf-8")))
    if not isinstance(answer, dict):
        raise RuntimeError(f"the host answered the inference of {model!r} with {type(answer).__name__}")
    if "error" in answer:
        message = str(answer.get("error"))
        if answer.get("invalid"):
            # Inputs the model refuses are the request's fault (the host checked them): a 400.
            raise BadRequest(message)
        raise RuntimeError(message)
    result = {}
    for t in answer.get("outputs") or []:
        result[t["name"]] = nest(t.get("data") or [], list(t.get("shape") or []))
    return result


def models():
    """The names of the deployment's models."""
    return list(json.loads(_door(b"M")))


_LEVELS = {
    "trace": "trace",
    "debug": "debug",
    "info": "info",
    "warn": "warn",
    "warning": "warn",
    "error": "error",
}


def log(message, level="info"):
    """Writes a line to the service log, tagged with the request being served."""
    level = _LEVELS.get(str(level).lower(), "info")
    _door(b"L" + json.dumps({"level": level, "message": str(message)}).encode("utf-8"))
