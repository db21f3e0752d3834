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

# The codec both runtimes of this module share (the scientific one embeds the same file).
from _plinth_tensors import BadRequest, Tensor, encode, nest

MODEL_DIR = "/models"

__all__ = ["MODEL_DIR", "BadRequest", "Tensor", "infer", "models", "log"]


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


def _to_wit(name, value):
    tensor = encode(name, value)
    datatype, flat = tensor["datatype"], tensor["data"]
    case = _CASES.get(datatype)
    if case is None:
        raise BadRequest(f"input '{name}': unsupported datatype {datatype}")
    if datatype in ("UINT8", "INT8"):
        flat = bytes(v & 0xFF for v in flat)
    return _t.Tensor(name=name, shape=tensor["shape"], data=case(flat))


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
        result[t.name] = nest(data, list(t.shape))
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
