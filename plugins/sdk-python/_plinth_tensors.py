"""The tensor codec of the ``plinth`` module, one source for both of its runtimes: the componentize-py SDK
(``plugins/sdk-python/plinth.py``, which hands tensors to the host over WIT) and the scientific runtime
(``runtime/python/science/plinth.py``, which sends them as JSON through the host door; ``runtime/build.rs``
embeds this file beside it). Python values (nested lists, numpy arrays, :class:`Tensor`) become a name, an
OIP datatype, a shape and flat data; flat data and a shape become nested lists again.

numpy is never imported here: a numpy value is known by its type's module, so the componentize-py build,
which has no numpy, runs the same code.
"""


class BadRequest(ValueError):
    """Raise from run() when the request is at fault: the caller gets a 400 with this message."""

    # Scripts know it as plinth.BadRequest (which re-exports it): tracebacks name it so.
    __module__ = "plinth"


class Tensor:
    """A tensor with an explicit OIP datatype ("FP32", "INT64", "BYTES", ...), for when the default guess
    from Python values (float -> FP32, int -> INT64, str -> BYTES, bool -> BOOL) is not what the model takes.
    ``data`` may be nested lists or a numpy array."""

    __module__ = "plinth"

    def __init__(self, data, datatype="FP32", shape=None):
        self.datatype = str(datatype).upper()
        array = _numpy_array(data)
        if array is not None:
            flat, guessed = _numpy_flat(array), list(array.shape)
        else:
            flat, guessed = _flatten(data)
        self.flat = flat
        self.shape = list(shape) if shape is not None else guessed


# The datatypes a tensor may have, and the Python type each value is converted to (BYTES: text).
DATATYPES = {
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


def encode(name, value):
    """The input ``name`` as an OIP tensor: ``{"name", "datatype", "shape", "data"}`` with flat ``data``
    of Python bools, ints, floats or text. A value that does not fit its datatype is a BadRequest."""
    if isinstance(value, Tensor):
        datatype, flat, shape = value.datatype, value.flat, value.shape
    else:
        array = _numpy_array(value)
        if array is not None:
            datatype, flat, shape = _numpy_datatype(array), _numpy_flat(array), list(array.shape)
        else:
            flat, shape = _flatten(value)
            datatype = _guess(flat)
    if datatype not in DATATYPES:
        raise BadRequest(f"input '{name}': unsupported datatype {datatype}")
    convert = DATATYPES[datatype]
    try:
        if datatype == "BYTES":
            flat = [_text(v) for v in flat]
        else:
            flat = [convert(v) for v in flat]
    except (TypeError, ValueError) as e:
        raise BadRequest(f"input '{name}': a value is not {datatype}: {e}") from None
    return {"name": name, "datatype": datatype, "shape": [int(d) for d in shape], "data": flat}


def nest(flat, shape):
    """Flat row-major data as nested lists of ``shape`` (a scalar for an empty shape)."""
    if not shape:
        return flat[0] if flat else None
    if len(shape) == 1:
        return list(flat)
    step = len(flat) // shape[0] if shape[0] else 0
    return [nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]
