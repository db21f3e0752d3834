"""``@input_schema(name, type)`` and ``@output_schema(type)``.

A decorated function still works when called directly: an argument given as JSON-like data (a list for a
NumpyParameterType, ...) is converted to the declared type; one already of that type passes unchanged.

The declarations are kept on the outermost wrapper, whatever the order of the decorators (and with
``@rawhttp`` among them), for Plinth's driver: ``_plinth_input_schema`` (name -> parameter type),
``_plinth_input_convert`` (name -> convert_to_provided_type) and ``_plinth_output_schema`` (a type).
"""
import functools
import inspect

from .parameter_types.abstract_parameter_type import AbstractParameterType

__all__ = ["input_schema", "output_schema"]


def _base(func):
    try:
        return inspect.unwrap(func)
    except ValueError:  # a cycle of __wrapped__
        return func


def _arg_names(func):
    try:
        return inspect.getfullargspec(_base(func)).args
    except TypeError:
        return []


def input_schema(param_name, param_type, convert_to_provided_type=True, optional=False):
    """Declares the schema of run's parameter ``param_name``. With ``convert_to_provided_type`` (the default)
    the value is converted to ``param_type``'s type before the function sees it."""
    if not isinstance(param_type, AbstractParameterType):
        raise Exception("Error, provided param_type must be a subclass of the AbstractParameterType.")

    def decorator(func):
        names = _arg_names(func)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            if convert_to_provided_type:
                if param_name in kwargs:
                    if not (optional and not _present(kwargs[param_name])):
                        kwargs[param_name] = _deserialize_input_argument(kwargs[param_name], param_type, param_name)
                elif param_name in names:
                    position = names.index(param_name)
                    if position < len(args):
                        args = list(args)
                        args[position] = _deserialize_input_argument(args[position], param_type, param_name)
                elif not optional:
                    raise Exception(f'Error, provided param_name "{param_name}" is not in the decorated function.')
            return func(*args, **kwargs)

        # functools.wraps copied the wrapped function's declarations; these are new dicts, never shared.
        inputs = dict(getattr(func, "_plinth_input_schema", None) or {})
        inputs[param_name] = param_type
        converts = dict(getattr(func, "_plinth_input_convert", None) or {})
        converts[param_name] = convert_to_provided_type
        wrapper._plinth_input_schema = inputs
        wrapper._plinth_input_convert = converts
        return wrapper

    return decorator


def output_schema(output_type):
    """Declares the schema of run's return value (for swagger; Plinth also encodes the value by it)."""
    if not isinstance(output_type, AbstractParameterType):
        raise Exception("Error, provided param_type must be a subclass of the AbstractParameterType.")

    def decorator(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            return func(*args, **kwargs)

        wrapper._plinth_output_schema = output_type
        return wrapper

    return decorator


def _present(value):
    try:
        return bool(value)
    except (TypeError, ValueError):  # numpy arrays, frames: present
        return True


def _deserialize_input_argument(input_data, param_type, param_name):
    """Converts ``input_data`` to ``param_type``: dicts and lists of a StandardPythonParameterType are walked
    for the parameter types they hold; any other type converts a value not already of its sample's type.
    Raises ValueError (or the type's own exception) naming what is wrong."""
    kind = param_type.sample_data_type
    if kind is dict:
        if not isinstance(input_data, dict):
            raise ValueError(f"Invalid input data type to parse. Expected: dict but got {type(input_data).__name__}")
        for key, inner in (getattr(param_type, "sample_data_type_map", None) or {}).items():
            if key not in input_data:
                continue
            try:
                input_data[key] = _deserialize_input_argument(input_data[key], inner, key)
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"in {key!r}: {e}") from None
    elif kind in (list, tuple):
        if not isinstance(input_data, (list, tuple)):
            raise ValueError(
                f"Invalid input data type to parse. Expected: {kind.__name__} but got {type(input_data).__name__}"
            )
        items = getattr(param_type, "sample_data_type_list", None) or []
        if items:
            converted = []
            for i, value in enumerate(input_data):
                try:
                    converted.append(_deserialize_input_argument(value, items[0], param_name))
                except Exception as e:  # noqa: BLE001
                    raise ValueError(f"item {i}: {e}") from None
            input_data = converted
    elif not isinstance(input_data, kind):
        input_data = param_type.deserialize_input(input_data)
    return input_data
