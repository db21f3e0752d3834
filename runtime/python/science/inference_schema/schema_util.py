"""Reading a decorated function's schemas back, as swagger schema objects."""
import copy

from .schema_decorators import _arg_names


def is_schema_decorated(func):
    """Whether ``func`` carries @input_schema or @output_schema."""
    return bool(getattr(func, "_plinth_input_schema", None)) or getattr(func, "_plinth_output_schema", None) is not None


def get_input_schema(func):
    """The swagger schema of ``func``'s input: an object with a property per parameter (``ServiceInput``)."""
    if not getattr(func, "_plinth_input_schema", None):
        return {"type": "object"}
    return _input_swagger(func)


def get_output_schema(func):
    """The swagger schema of ``func``'s output (``ServiceOutput``)."""
    if getattr(func, "_plinth_output_schema", None) is None:
        return {"type": "object"}
    return _output_swagger(func)


def get_supported_versions(func):
    from .parameter_types.abstract_parameter_type import SUPPORTED_VERSIONS

    return list(SUPPORTED_VERSIONS)


def _input_swagger(func):
    """As inference-schema builds it: every positional parameter of the undecorated function is a property
    (``{}``, example ``""``) until a declaration describes it."""
    schema = {"type": "object", "properties": {}, "example": {}}
    for name in _arg_names(func):
        schema["properties"][name] = {}
        schema["example"][name] = ""
    for name, param_type in func._plinth_input_schema.items():
        item = copy.deepcopy(param_type.input_to_swagger())
        schema["example"][name] = item.pop("example", None)
        schema["properties"][name] = item
    return schema


def _output_swagger(func):
    return copy.deepcopy(func._plinth_output_schema.input_to_swagger())
