"""NumpyParameterType: a parameter given as a JSON array, decoded into a numpy array shaped and typed as
the sample (every dimension but the first is enforced)."""
import numpy as np

from .abstract_parameter_type import AbstractParameterType

NUMPY_FORMAT = "numpy.ndarray"

_SIMPLE = {
    "int8": {"type": "integer", "format": "int8"},
    "int16": {"type": "integer", "format": "int16"},
    "int32": {"type": "integer", "format": "int32"},
    "int64": {"type": "integer", "format": "int64"},
    "uint8": {"type": "integer", "format": "uint8"},
    "uint16": {"type": "integer", "format": "uint16"},
    "uint32": {"type": "integer", "format": "uint32"},
    "uint64": {"type": "integer", "format": "uint64"},
    "bool": {"type": "boolean"},
    "float16": {"type": "number", "format": "float"},
    "float32": {"type": "number", "format": "float"},
    "float64": {"type": "number", "format": "double"},
    "object": {"type": "object"},
}

_TIME_UNITS = {
    "years": "Y",
    "months": "M",
    "weeks": "W",
    "days": "D",
    "hours": "h",
    "minutes": "m",
    "seconds": "s",
    "milliseconds": "ms",
    "microseconds": "us",
    "nanoseconds": "ns",
    "picoseconds": "ps",
    "femtoseconds": "fs",
    "attoseconds": "as",
}


def dtype_to_swagger(dtype):
    """The swagger type of one element of ``dtype`` (structured dtypes become objects)."""
    if dtype.names:
        return {"type": "object", "properties": {name: dtype_to_swagger(dtype[name]) for name in dtype.names}}
    if dtype.subdtype is not None:
        return array_swagger(dtype_to_swagger(dtype.subdtype[0]), dtype.subdtype[1])
    name = dtype.name.lower()
    if name in _SIMPLE:
        return dict(_SIMPLE[name])
    if name.startswith("datetime"):
        return {"type": "string", "format": "date-time"}
    if name.startswith("str"):
        return {"type": "string"}
    if name.startswith("bytes") or name.startswith("void"):
        return {"type": "string", "format": "binary"}
    if name.startswith("timedelta"):
        return {"type": "string", "format": "timedelta"}
    raise TypeError(f"We currently do not support extracting schema from data of type {name}")


def array_swagger(item, shape):
    schema = {"type": "array", "items": item}
    for _ in range(len(shape) - 1):
        schema = {"type": "array", "items": schema}
    return schema


def _shape_text(shape):
    """The shape the sample allows: any length first, ``(-1, 10)``."""
    return str(tuple([-1] + list(shape[1:])))


class NumpyParameterType(AbstractParameterType):
    """A parameter expected as a numpy array. By default the decoded array takes the sample's dtype and must
    have the sample's shape in every dimension but the first; either check can be turned off."""

    def __init__(self, sample_input, enforce_column_type=True, enforce_shape=True):
        if not isinstance(sample_input, np.ndarray):
            raise Exception("Invalid sample input provided, must provide a sample Numpy array.")
        super().__init__(sample_input)
        self.enforce_column_type = enforce_column_type
        self.enforce_shape = enforce_shape

    def deserialize_input(self, input_data):
        """The array for ``input_data`` (a list, as parsed from JSON); a numpy array passes unchanged.
        Raises ValueError naming the problem (``expected shape (-1, 10)``, a value of the wrong type)."""
        if isinstance(input_data, np.ndarray):
            return input_data
        if not isinstance(input_data, list):
            raise ValueError(f"Invalid input format: expected an array of items, got {_json_kind(input_data)}")
        dtype = self.sample_input.dtype
        try:
            if self.enforce_column_type:
                if dtype.names or dtype.kind in ("M", "m"):
                    input_data = [self._preprocess_json_input(item, dtype) for item in input_data]
                array = np.array(input_data, dtype=dtype)
            else:
                array = np.array(input_data)
        except (ValueError, TypeError, OverflowError, KeyError, IndexError) as e:
            detail = str(e) or type(e).__name__
            raise ValueError(f"Invalid input array: {detail} (expected elements of type {dtype})") from None

        if self.enforce_shape:
            expected = self.sample_input.shape
            if array.ndim != len(expected) or any(array.shape[d] != expected[d] for d in range(1, len(expected))):
                raise ValueError(
                    f"Invalid input array: expected shape {_shape_text(expected)}, got {tuple(array.shape)}"
                )
        return array

    def input_to_swagger(self):
        dtype = self.sample_input.dtype
        shape = self.sample_input.shape
        item = dtype_to_swagger(dtype)
        if not shape:  # a 0-d sample: one value
            schema = dict(item)
            schema["example"] = self._get_data_record_swagger_sample(item, self.sample_input[()])
        else:
            schema = array_swagger(item, shape)
            schema["example"] = self._get_swagger_sample(self.sample_input, len(self.sample_input), schema["items"])
        schema["format"] = NUMPY_FORMAT
        return schema

    def _plinth_encode(self, value):
        if isinstance(value, np.ndarray):
            return value.tolist()
        return value

    @classmethod
    def _preprocess_json_input(cls, value, dtype):
        if dtype.names:
            fields = []
            for i, name in enumerate(dtype.names):
                item = value[name] if isinstance(value, dict) else value[i]
                fields.append(cls._preprocess_json_input(item, dtype[i]))
            return tuple(fields)
        name = dtype.name.lower()
        if name.startswith("datetime"):
            return np.datetime64(value)
        if name.startswith("timedelta"):
            return cls._parse_timedelta(value)
        return value

    @classmethod
    def _parse_timedelta(cls, text):
        parts = str(text).split(None, 1)
        if len(parts) != 2:
            raise ValueError(f"Invalid numpy.timedelta64 value {text!r}: the format is '<value> <time unit>'")
        unit = parts[1].lower()
        if unit not in _TIME_UNITS:
            raise ValueError(f"Invalid numpy.timedelta64 value {text!r}: unknown time unit {parts[1]!r}")
        return np.timedelta64(int(parts[0]), _TIME_UNITS[unit])


def _json_kind(value):
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__
