"""Swagger schemas for standard Python values (and nests of them holding other parameter types)."""
import base64
import datetime

from .abstract_parameter_type import AbstractParameterType

DATE_FORMAT = "%Y-%m-%d"
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f %z"
TIME_FORMAT = "%H:%M:%S.%f %z"


def handle_standard_types(sample):
    """The schema, with its ``example``, of a standard Python value."""
    kind = type(sample)
    if isinstance(sample, AbstractParameterType):
        return sample.input_to_swagger()
    if kind is bool:
        return {"type": "boolean", "example": sample}
    if kind is int:
        return {"type": "integer", "format": "int64", "example": sample}
    if kind is float:
        return {"type": "number", "format": "double", "example": sample}
    if kind is str:
        return {"type": "string", "example": sample}
    if kind in (bytes, bytearray):
        return {"type": "string", "format": "byte", "example": base64.b64encode(bytes(sample)).decode("utf-8")}
    if kind is datetime.datetime:
        value = sample if sample.tzinfo is not None else sample.replace(tzinfo=datetime.timezone.utc)
        return {"type": "string", "format": "date-time", "example": value.strftime(DATETIME_FORMAT)}
    if kind is datetime.date:
        return {"type": "string", "format": "date", "example": sample.strftime(DATE_FORMAT)}
    if kind is datetime.time:
        value = sample if sample.tzinfo is not None else sample.replace(tzinfo=datetime.timezone.utc)
        return {"type": "string", "format": "time", "example": value.strftime(TIME_FORMAT)}
    if kind in (list, tuple, range):
        return get_swagger_for_list(sample)
    if kind is dict:
        return get_swagger_for_nested_dict(sample)
    return {"type": "object", "example": sample}


def _number_kind(values):
    return all(type(v) in (int, float) for v in values) and any(type(v) is float for v in values)


def get_swagger_for_list(values):
    values = list(values)
    if not values:
        return {"type": "array", "items": {"type": "object"}, "example": []}
    kinds = {type(v) for v in values}
    if len(kinds) > 1 and not _number_kind(values):
        raise ValueError("OpenAPI 2.x does not support arrays of mixed types: " + ", ".join(sorted(k.__name__ for k in kinds)))
    if _number_kind(values):
        values = [float(v) for v in values]
    example = []
    items = {"type": "object"}
    for value in values:
        items = handle_standard_types(value)
        example.append(items.pop("example", None))
    return {"type": "array", "items": items, "example": example}


def get_swagger_for_nested_dict(values):
    required = []
    properties = {}
    example = {}
    for key, value in values.items():
        key = str(key)
        required.append(key)
        schema = handle_standard_types(value)
        example[key] = schema.pop("example", None)
        properties[key] = schema
    return {"type": "object", "required": required, "properties": properties, "example": example}
