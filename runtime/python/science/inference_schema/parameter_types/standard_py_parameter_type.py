"""StandardPythonParameterType: a parameter of a standard Python type (int, float, str, bool, bytes, dates,
lists and dicts), whose lists and dicts may hold other parameter types."""
import base64
import datetime
import json

from ._util import handle_standard_types
from .abstract_parameter_type import AbstractParameterType


class StandardPythonParameterType(AbstractParameterType):
    """A parameter of the sample's standard Python type. A dict sample's values and a list sample's items
    may be parameter types themselves (``{"data": NumpyParameterType(...)}``): they are decoded in turn."""

    def __init__(self, sample_input):
        super().__init__(sample_input)
        self.sample_data_type_map = {}
        self.sample_data_type_list = []
        if self.sample_data_type is dict:
            for key, value in sample_input.items():
                if isinstance(value, AbstractParameterType):
                    self.sample_data_type_map[key] = value
        elif self.sample_data_type in (list, tuple):
            for value in sample_input:
                if isinstance(value, AbstractParameterType):
                    self.sample_data_type_list.append(value)

    def deserialize_input(self, input_data):
        kind = self.sample_data_type
        try:
            if kind is datetime.datetime and isinstance(input_data, str):
                input_data = _parse_datetime(input_data)
            elif kind is datetime.date and isinstance(input_data, str):
                input_data = datetime.date.fromisoformat(input_data)
            elif kind is datetime.time and isinstance(input_data, str):
                input_data = _parse_time(input_data)
            elif kind in (bytes, bytearray) and isinstance(input_data, str):
                input_data = kind(base64.b64decode(input_data.encode("utf-8"), validate=True))
        except (ValueError, TypeError) as e:
            raise ValueError(f"Invalid input data: {e}") from None

        if kind is float and type(input_data) is int:
            pass  # an int where a float is expected is accepted, for convenience
        elif not isinstance(input_data, kind):
            raise ValueError(
                f"Invalid input data type to parse. Expected: {kind.__name__} but got {type(input_data).__name__}"
            )
        return input_data

    def input_to_swagger(self):
        if self.sample_input is None:
            raise ValueError("Sample input cannot be None")
        schema = handle_standard_types(self.sample_input)
        try:
            json.dumps(schema)
        except TypeError as e:
            raise TypeError(
                "Invalid python data sample provided: ensure that the data is fully JSON serializable to be able "
                f"to generate swagger schema from it. Actual error: {e}"
            ) from None
        return schema

    def _plinth_encode(self, value):
        if isinstance(value, datetime.datetime):
            return value.isoformat()
        if isinstance(value, (bytes, bytearray)) and self.sample_data_type in (bytes, bytearray):
            return base64.b64encode(bytes(value)).decode("utf-8")
        if isinstance(value, dict) and self.sample_data_type_map:
            return {k: self.sample_data_type_map[k]._plinth_encode(v) if k in self.sample_data_type_map else v
                    for k, v in value.items()}
        if isinstance(value, (list, tuple)) and self.sample_data_type_list:
            inner = self.sample_data_type_list[0]
            return [inner._plinth_encode(v) for v in value]
        return value


def _parse_datetime(text):
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        try:
            from dateutil import parser  # pandas' dependency, when it is there
        except ImportError:
            raise ValueError(f"{text!r} is not an ISO 8601 date and time") from None
        return parser.parse(text)


def _parse_time(text):
    try:
        return datetime.time.fromisoformat(text)
    except ValueError:
        return _parse_datetime(text).timetz()
