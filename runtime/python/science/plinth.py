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

MODEL_DIR = "/models"

__all__ = ["MODEL_DIR", "BadRequest", "Tensor", "infer", "models", "log"]


class BadRequest(ValueError):
    """Raise from run() when the request is at fault: the caller gets a 400 with this message."""


class Tensor:
    """A tensor with an explicit OIP datatype ("FP32", "INT64", "BYTES", ...), for when the default guess
    from Python values (float -> FP32, int -> INT64, str -> BYTES, bool -> BOOL) is not what the model takes.
    ``data`` may be nested lists or a numpy array."""

    def __init__(self, data, datatype="FP32", shape=None):
        self.datatype = str(datatype).upper()
        array = _numpy_array(data)
        if array is not None:
            flat, guessed = _numpy_flat(array), list(array.shape)
        else:
            flat, guessed = _flatten(data)
        self.flat = flat
        self.shape = list(shape) if shape is not None else guessed


# The datatypes the door carries, and how a value of each is written in JSON.
_DATATYPES = {
    "BOOL": bool,
    "UINT8": int,
    "UINT16": int,
    "UINT32": int,
    "UINT64": int,
    "INT8": int,
    "INT16": int,
    "INT32": int,
    "INT64": int,
    "FP16": float,
    "FP32": float,
    "FP64": float,
    "BYTES": None,
}

# numpy dtype names -> datatypes
_NUMPY = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}


def _numpy_array(value):
    """``value`` as a numpy array when it is one (or a numpy scalar); None otherwise. Never imports numpy."""
    module = type(value).__module__ or ""
    if not module.startswith("numpy"):
        return None
    import numpy

    if isinstance(value, numpy.ndarray):
        return value
    if isinstance(value, numpy.generic):
        return numpy.asarray(value)
    return None


def _numpy_datatype(array):
    kind = array.dtype.kind
    if kind in ("U", "S", "O"):
        return "BYTES"
    datatype = _NUMPY.get(array.dtype.name)
    if datatype is None:
        raise BadRequest(f"numpy arrays of dtype {array.dtype} cannot be sent to a model")
    return datatype


def _numpy_flat(array):
    return array.ravel().tolist()


def _flatten(data):
    shape = []
    probe = data
    while isinstance(probe, (list, tuple)):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    flat = []

    def walk(x, depth):
        if depth == len(shape):
            if isinstance(x, (list, tuple)):
                raise BadRequest("ragged array: nested deeper than its first element")
            flat.append(x)
            return
        if not isinstance(x, (list, tuple)) or len(x) != shape[depth]:
            raise BadRequest(f"ragged array: expected a list of {shape[depth]} at depth {depth}")
        for item in x:
            walk(item, depth + 1)

    walk(data, 0)
    return flat, shape


def _guess(flat):
    if flat and isinstance(flat[0], bool):
        return "BOOL"
    if flat and isinstance(flat[0], (str, bytes)):
        return "BYTES"
    if flat and all(isinstance(v, int) for v in flat):
        return "INT64"
    return "FP32"


def _text(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _tensor(name, value):
    if isinstance(value, Tensor):
        datatype, flat, shape = value.datatype, value.flat, value.shape
    else:
        array = _numpy_array(value)
        if array is not None:
            datatype, flat, shape = _numpy_datatype(array), _numpy_flat(array), list(array.shape)
        else:
            flat, shape = _flatten(value)
            datatype = _guess(flat)
    if datatype not in _DATATYPES:
        raise BadRequest(f"input '{name}': unsupported datatype {datatype}")
    convert = _DATATYPES[datatype]
    try:
        if datatype == "BYTES":
            flat = [_text(v) for v in flat]
        else:
            flat = [convert(v) for v in flat]
    except (TypeError, ValueError) as e:
        raise BadRequest(f"input '{name}': a value is not {datatype}: {e}") from None
    return {"name": name, "datatype": datatype, "shape": [int(d) for d in shape], "data": flat}


def _nest(flat, shape):
    if not shape:
        return flat[0] if flat else None
    if len(shape) == 1:
        return list(flat)
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def _door(frame):
    import _host

    return bytes(_host.call(frame))


def infer(model, inputs):
    """Runs one of the deployment's ONNX models. ``inputs`` maps input names to nested lists, numpy arrays
    (float32 -> FP32, float64 -> FP64, int64 -> INT64, int32 -> INT32, bool -> BOOL, str/object -> BYTES)
    or Tensor; returns a dict of output name -> nested lists."""
    tensors = [_tensor(str(name), value) for name, value in inputs.items()]
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
        result[t["name"]] = _nest(t.get("data") or [], list(t.get("shape") or []))
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
