"""The base of every parameter type: ``deserialize_input`` turns JSON-like input into the type's value,
``input_to_swagger`` describes the sample as an OpenAPI 2 schema object with an ``example``."""
import base64
import datetime
from abc import ABC, abstractmethod

SUPPORTED_VERSIONS = ["2.0", "3.0", "3.1"]


class AbstractParameterType(ABC):
    """Parent of the parameter types. Subclass it and override ``deserialize_input`` and
    ``input_to_swagger`` for a type of your own."""

    def __init__(self, sample_input):
        self.sample_input = sample_input
        self.sample_data_type = type(sample_input)

    @abstractmethod
    def deserialize_input(self, input_data):
        """Converts JSON-like input into the concrete value; raises ValueError naming what is wrong."""

    @abstractmethod
    def input_to_swagger(self):
        """The sample described as a swagger schema object, with an ``example``."""

    def supported_versions(self):
        return list(SUPPORTED_VERSIONS)

    def _plinth_encode(self, value):
        """The value run() returned, made JSON-ready (used for @output_schema)."""
        return value

    # Examples for swagger, from sample values and their schema.
    @classmethod
    def _get_swagger_sample(cls, records, max_count, item_schema):
        return [cls._get_data_record_swagger_sample(item_schema, records[i]) for i in range(max_count)]

    @classmethod
    def _get_data_record_swagger_sample(cls, schema, value):
        kind = schema.get("type")
        if kind == "object":
            if "properties" in schema:
                return {
                    name: cls._get_data_record_swagger_sample(sub, value[name])
                    for name, sub in schema["properties"].items()
                }
            if "additionalProperties" in schema:
                return {k: cls._get_data_record_swagger_sample(schema["additionalProperties"], value[k]) for k in value}
            return str(value)
        if kind == "array":
            return [cls._get_data_record_swagger_sample(schema["items"], v) for v in value]
        if kind == "number":
            return float(value)
        if kind == "integer":
            return int(value)
        if kind == "boolean":
            return bool(value)
        if kind == "string":
            form = schema.get("format")
            if form == "date":
                return cls._as_datetime(value).strftime("%Y-%m-%d")
            if form == "date-time":
                return cls._as_datetime(value).strftime("%Y-%m-%d %H:%M:%S,%f")
            if form == "binary":
                return base64.b64encode(bytes(value)).decode("utf-8")
        return str(value)

    @staticmethod
    def _as_datetime(value):
        if isinstance(value, (datetime.date, datetime.datetime)):
            return value
        converted = value.astype(datetime.datetime)  # numpy.datetime64
        if isinstance(converted, (datetime.date, datetime.datetime)):
            return converted
        raise ValueError(f"{value!r} cannot be shown as a date")
