"""Plinth for Python entry scripts (score.py), compiled to a WebAssembly component by componentize-py.

A score.py is written exactly as for Azure ML: ``init()`` runs once, ``run(raw_data)`` per request and
returns anything ``json.dumps`` accepts. From it::

    import plinth
    out = plinth.infer("diabetes", {"X": [[...10 floats...]]})   # -> {"variable": [[...]]}
    plinth.log("scored")                                          # to the service log, with the request id
    raise plinth.BadRequest("field 'data' is missing")           # the caller gets a 400

Model files are read-only under ``plinth.MODEL_DIR`` (``/models``, also ``$AZUREML_MODEL_DIR``).
"""
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports import types as _t

MODEL_DIR = "/models"


class BadRequest(ValueError):
    """Raise from run() when the request is at fault: the caller gets a 400 with this message."""


class Tensor:
    """A tensor with an explicit OIP datatype ("FP32", "INT64", "BYTES", ...), for when the default guess
    from Python values (float -> FP32, int -> INT64, str -> BYTES, bool -> BOOL) is not what the model takes."""

    def __init__(self, data, datatype="FP32", shape=None):
        self.datatype = datatype.upper()
        flat, guessed = _flatten(data)
        self.flat = flat
        self.shape = list(shape) if shape is not None else guessed


_CASES = {
    "BOOL": _t.TensorData_Bool,
    "UINT8": _t.TensorData_Uint8,
    "UINT16": _t.TensorData_Uint16,
    "UINT32": _t.TensorData_Uint32,
    "UINT64": _t.TensorData_Uint64,
    "INT8": _t.TensorData_Int8,
    "INT16": _t.TensorData_Int16,
    "INT32": _t.TensorData_Int32,
    "INT64": _t.TensorData_Int64,
    "FP32": _t.TensorData_Fp32,
    "FP64": _t.TensorData_Fp64,
    "BYTES": _t.TensorData_Bytes,
}


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
    if flat and isinstance(flat[0], str):
        return "BYTES"
    if flat and all(isinstance(v, int) for v in flat):
        return "INT64"
    return "FP32"


def _to_wit(name, value):
    if isinstance(value, Tensor):
        datatype, flat, shape = value.datatype, value.flat, value.shape
    else:
        flat, shape = _flatten(value)
        datatype = _guess(flat)
    case = _CASES.get(datatype)
    if case is None:
        raise BadRequest(f"input '{name}': unsupported datatype {datatype}")
    if datatype in ("FP32", "FP64"):
        flat = [float(v) for v in flat]
    elif datatype in ("UINT8", "INT8"):
        flat = bytes(v & 0xFF for v in flat)
    return _t.Tensor(name=name, shape=shape, data=case(flat))


def _nest(flat, shape):
    if not shape:
        return flat[0] if flat else None
    if len(shape) == 1:
        return list(flat)
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def infer(model, inputs):
    """Runs one of the deployment's ONNX models. ``inputs`` maps input names to nested lists (or Tensor);
    returns a dict of output name -> nested lists."""
    tensors = [_to_wit(name, value) for name, value in inputs.items()]
    try:
        outputs = host.infer(model, tensors)
    except Err as e:
        # Inputs the model refuses are the request's fault (the host checked them): a 400.
        if isinstance(e.value, _t.Error_InvalidInput):
            raise BadRequest(e.value.value) from None
        raise
    result = {}
    for t in outputs:
        data = t.data.value
        if isinstance(data, (bytes, bytearray)):
            data = list(data)
        result[t.name] = _nest(data, list(t.shape))
    return result


def models():
    """The names of the deployment's models."""
    return host.models()


_LEVELS = {
    "trace": _t.Level.TRACE,
    "debug": _t.Level.DEBUG,
    "info": _t.Level.INFO,
    "warn": _t.Level.WARN,
    "warning": _t.Level.WARN,
    "error": _t.Level.ERROR,
}


def log(message, level="info"):
    """Writes a line to the service log, tagged with the request being served."""
    host.log(_LEVELS.get(level.lower(), _t.Level.INFO), str(message))
