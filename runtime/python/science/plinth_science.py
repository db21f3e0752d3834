"""Plinth's driver for Azure ML entry scripts (``score.py``) in the sandboxed CPython.

The host keeps one interpreter per instance and runs two snippets in it::

    import plinth_science; plinth_science.load("/app", "score")   # once: import, swagger, init()
    plinth_science.call()                                           # per request

Both talk to the host only through the door, ``_host.call(frame) -> bytes`` (frames: ``Q`` the request,
``R`` the response, ``E`` an error, ``S`` the swagger schemas, ``L`` a log line). Neither ever raises:
``load`` returns True or False (after an ``E`` frame), ``call`` returns True when it sent ``R`` and False
when it sent ``E`` (or could not send at all).

``run`` is called as Azure ML's inference server calls it:

* plain ``run(raw_data)``: the body as text (for GET, the query parameters as a JSON object);
* ``@rawhttp``: an ``AMLRequest``;
* ``@input_schema`` / ``@output_schema`` (inference-schema): the JSON body's keys as keyword arguments,
  the declared ones decoded by their parameter types (a body wrapped as ``{"Inputs": {...}}`` is accepted).

A parameter ``request_headers`` in run's signature receives the request headers, as on Azure.
The return value is sent as JSON (numpy and pandas values included), or as an ``AMLResponse`` says.
"""
import json
import os
import sys

__all__ = ["load", "call"]

_RAW = "raw"
_SCHEMA = "schema"
_PLAIN = "plain"

_state = None  # the loaded script, once load() has succeeded
_failure = None  # why the last load() failed


class _Script:
    __slots__ = ("module", "run", "path", "mode", "params", "headers", "inputs", "converts", "output")


class _LoadError(Exception):
    """A load failure described by its message alone (no traceback location)."""


class _BadInput(Exception):
    """The request is at fault: a 400 with this message."""


# ---- the door ---------------------------------------------------------------------------------------


def _door(frame):
    import _host

    return bytes(_host.call(bytes(frame)))


def _send(op, payload):
    """Sends a frame whose answer is empty; never raises (if the host cannot be told, nothing can)."""
    try:
        _door(op + json.dumps(payload).encode("utf-8"))
        return True
    except BaseException:  # noqa: BLE001
        return False


def _send_error(kind, message):
    _send(b"E", {"kind": kind, "message": message})


def _log(message, level="info"):
    _send(b"L", {"level": level, "message": str(message)})


# ---- describing failures ----------------------------------------------------------------------------


def _same_file(a, b):
    if not a or not b:
        return False
    return os.path.normpath(os.path.abspath(a)) == os.path.normpath(os.path.abspath(b))


def _describe(e, script_path):
    """``"<Type>: <message> (at score.py:<line>)"``: the innermost line of the script's own file that the
    exception passed through, else the innermost line; a SyntaxError names its own file and line."""
    import traceback

    name = type(e).__name__
    where = None
    if isinstance(e, SyntaxError) and getattr(e, "filename", None):
        message = e.msg or ""
        if e.lineno:
            where = (os.path.basename(e.filename), e.lineno)
    else:
        try:
            message = str(e)
        except Exception:  # noqa: BLE001 - a broken __str__
            message = ""
    if where is None:
        frames = traceback.extract_tb(e.__traceback__)
        mine = [f for f in frames if _same_file(f.filename, script_path)]
        frame = (mine or frames or [None])[-1]
        if frame is not None:
            where = (os.path.basename(frame.filename), frame.lineno)
    text = f"{name}: {message}" if message else name
    if where is not None:
        text += f" (at {where[0]}:{where[1]})"
    return text + _beside_missing(e)


def _beside_missing(e):
    """For a file not found under the model folder: what the folder it looked in holds (a model
    registered from a folder keeps its own layout under ``/models/<name>/<version>/``)."""
    path = getattr(e, "filename", None)
    if not isinstance(e, FileNotFoundError) or not isinstance(path, str):
        return ""
    models = os.environ.get("AZUREML_MODEL_DIR") or "/models"
    path = os.path.normpath(path)
    if not (path == models or path.startswith(models.rstrip("/") + "/")):
        return ""
    folder = os.path.dirname(path)
    while len(folder) >= len(models) and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return ""
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    return f"; {folder} holds: {shown or 'nothing'}"


# ---- load -------------------------------------------------------------------------------------------


VENDOR_DIR = ".plinth_vendor"


def _install_logging():
    """Python's ``logging`` into the service log with its levels, INFO and above shown (as Azure's
    inference server shows them), and ``warnings`` (scikit-learn's InconsistentVersionWarning for a model
    pickled with another version, say) as WARNING lines. A script that sets up logging itself keeps it."""
    import logging

    class ServiceLog(logging.Handler):
        def emit(self, record):
            try:
                if record.levelno >= logging.ERROR:
                    level = "error"
                elif record.levelno >= logging.WARNING:
                    level = "warn"
                elif record.levelno >= logging.INFO:
                    level = "info"
                else:
                    level = "debug"
                message = self.format(record)
                if record.name not in ("root", "py.warnings"):
                    message = f"{record.name}: {message}"
                _log(message, level)
            except Exception:  # noqa: BLE001 - logging never fails the request
                self.handleError(record)

    root = logging.getLogger()
    if any(type(h).__name__ == "ServiceLog" for h in root.handlers):
        return
    root.addHandler(ServiceLog())
    if root.level == logging.WARNING:
        root.setLevel(logging.INFO)
    logging.captureWarnings(True)


def load(source_dir, module_name="score"):
    """Imports the entry script ``module_name`` from ``source_dir``, sends its swagger schemas (``S``) when
    ``run`` is decorated with inference-schema, and calls ``init()``. Returns True, or sends ``E`` (kind
    ``exception``) and returns False. Never raises."""
    global _state, _failure
    _state = None
    _failure = None
    script_path = None
    try:
        _install_logging()
        source_dir, module_name = _normalise(str(source_dir), str(module_name))
        script_path = os.path.join(source_dir, *module_name.split(".")) + ".py"
        script = _import(source_dir, module_name)
        script_path = script.path
        _send_schema(script)
        init = getattr(script.module, "init", None)
        if init is not None:
            init()
        _state = script
        return True
    except _LoadError as e:
        _failure = str(e)
    except BaseException as e:  # noqa: BLE001 - every failure becomes a clear init error
        _failure = _describe(e, script_path)
    _send_error("exception", _failure)
    return False


def _normalise(source_dir, module_name):
    """Accepts ``score``, ``score.py`` or ``sub/score.py`` for the entry script."""
    if module_name.endswith(".py"):
        module_name = module_name[:-3]
    if "/" in module_name:
        sub, module_name = module_name.rsplit("/", 1)
        source_dir = os.path.join(source_dir, sub)
    return source_dir, module_name


def _import(source_dir, module_name):
    import importlib

    # Pure-Python packages the deployment's conda/pip file named, vendored at deploy time.
    for folder in (os.path.join(source_dir, VENDOR_DIR), source_dir):
        if folder in sys.path:
            sys.path.remove(folder)
        if folder == source_dir or os.path.isdir(folder):
            sys.path.insert(0, folder)
    # A second load in the same interpreter (tests, or a reload) imports the script afresh.
    for name in [n for n in sys.modules if n == module_name or n.startswith(module_name + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    request_module = sys.modules.get("azureml.contrib.services.aml_request")
    if request_module is not None:
        request_module._rawHttpRequested = False

    module = importlib.import_module(module_name)

    script = _Script()
    script.module = module
    script.path = getattr(module, "__file__", None) or os.path.join(source_dir, module_name + ".py")
    filename = os.path.basename(script.path)
    run = getattr(module, "run", None)
    if run is None:
        raise _LoadError(f"{filename} does not define a run() function")
    if not callable(run):
        raise _LoadError(f"{filename}: run is not a function")
    script.run = run
    script.inputs = dict(getattr(run, "_plinth_input_schema", None) or {})
    script.converts = dict(getattr(run, "_plinth_input_convert", None) or {})
    script.output = getattr(run, "_plinth_output_schema", None)

    request_module = sys.modules.get("azureml.contrib.services.aml_request")
    raw = bool(getattr(run, "_plinth_rawhttp", False)) or bool(
        request_module is not None and getattr(request_module, "_rawHttpRequested", False)
    )
    if raw and script.inputs:
        raise _LoadError(f"{filename}: run() cannot be decorated with both @rawhttp and @input_schema")
    if raw:
        script.mode = _RAW
    elif script.inputs or script.output is not None:
        script.mode = _SCHEMA  # as Azure: any inference-schema decorator makes the body a JSON object
    else:
        script.mode = _PLAIN

    script.params, script.headers = _signature(run)
    if script.params is not None and not script.params:
        raise _LoadError(f"{filename}: run() needs to accept an argument for the input data")
    return script


def _signature(run):
    """run's parameters that take input (None when its signature cannot be read), and whether it takes
    ``request_headers``."""
    import inspect

    try:
        parameters = list(inspect.signature(run).parameters.values())
    except (TypeError, ValueError):
        return None, False
    headers = any(p.name == "request_headers" for p in parameters)
    takes = []
    for p in parameters:
        if p.name == "request_headers":
            continue
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.VAR_POSITIONAL):
            takes.append(p)
    return takes, headers


def _send_schema(script):
    if not script.inputs and script.output is None:
        return
    from inference_schema import schema_util

    payload = {"input": None, "output": None}
    if script.inputs:
        try:
            payload["input"] = schema_util._input_swagger(script.run)
        except Exception as e:  # noqa: BLE001 - the service still runs without its swagger
            _log(f"the input schema could not be described for swagger: {type(e).__name__}: {e}", "warn")
    if script.output is not None:
        try:
            payload["output"] = schema_util._output_swagger(script.run)
        except Exception as e:  # noqa: BLE001
            _log(f"the output schema could not be described for swagger: {type(e).__name__}: {e}", "warn")
    try:
        frame = b"S" + json.dumps(payload, default=_json_default).encode("utf-8")
    except (TypeError, ValueError) as e:
        _log(f"the schemas could not be sent for swagger: {e}", "warn")
        return
    try:
        _door(frame)
    except BaseException:  # noqa: BLE001
        pass


# ---- call -------------------------------------------------------------------------------------------


def call():
    """Serves one request: ``Q`` for it, run, then ``R`` (or ``E``). Never raises."""
    try:
        return _call()
    except BaseException as e:  # noqa: BLE001 - a fault of the driver itself, still an answer
        _send_error("exception", f"the Plinth driver failed: {type(e).__name__}: {e}")
        return False


def _call():
    script = _state
    if script is None:
        why = f": {_failure}" if _failure else ""
        _send_error("exception", f"the entry script is not loaded{why}")
        return False

    answer = _door(b"Q")
    head, _, body = answer.partition(b"\n")
    request = json.loads(head.decode("utf-8")) if head.strip() else {}
    if not isinstance(request, dict):
        request = {}

    try:
        args, kwargs = _arguments(script, request, body)
    except _BadInput as e:
        _send_error("bad_request", str(e))
        return False

    try:
        result = script.run(*args, **kwargs)
    except BaseException as e:  # noqa: BLE001
        plinth = sys.modules.get("plinth")
        if plinth is not None and isinstance(e, plinth.BadRequest):
            _send_error("bad_request", str(e))
        else:
            _send_error("exception", _describe(e, script.path))
        return False

    try:
        status, content_type, headers, payload = _response(script, result)
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        _send_error("exception", f"run() returned a value that is not JSON serialisable: {e}")
        return False
    except BaseException as e:  # noqa: BLE001
        _send_error("exception", _describe(e, script.path))
        return False

    head = {"status": status, "contentType": content_type}
    if headers:
        head["headers"] = headers
    try:
        _door(b"R" + json.dumps(head).encode("utf-8") + b"\n" + payload)
    except BaseException:  # noqa: BLE001 - nothing more can be done
        return False
    return True


def _text(value, default=""):
    return value if isinstance(value, str) else default


def _request_headers(request):
    headers = request.get("headers")
    if not isinstance(headers, dict):
        return {}
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _arguments(script, request, body):
    method = _text(request.get("method"), "POST").upper()
    query = _text(request.get("query"))
    headers = _request_headers(request)
    kwargs = {}
    if script.headers:
        kwargs["request_headers"] = dict(headers)

    if script.mode == _RAW:
        from azureml.contrib.services.aml_request import AMLRequest

        req = AMLRequest(
            method=method,
            path=_text(request.get("path"), "/"),
            query=query,
            headers=headers,
            body=body,
            request_id=_text(request.get("requestId")) or None,
        )
        return _single(script, req, kwargs)

    if script.mode == _PLAIN:
        if method == "GET":
            return _single(script, json.dumps(_query_parameters(query)), kwargs)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _BadInput(f"the request body is not UTF-8 text: {e}") from None
        return _single(script, text, kwargs)

    # inference-schema: a JSON object whose keys are run's parameters
    if method == "GET":
        payload = _query_parameters(query)
    else:
        if not body.strip():
            raise _BadInput(f"the request body is empty; expected a JSON object with {_expected(script)}")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as e:
            raise _BadInput(f"the request body is not valid JSON: {e}") from None
    if not isinstance(payload, dict):
        raise _BadInput(f"the request body should be a JSON object with {_expected(script)}")
    kwargs.update(_schema_arguments(script, payload))
    return (), kwargs


def _single(script, value, kwargs):
    """run's one input argument: positionally, unless run takes it as keyword-only."""
    first = (script.params or [None])[0]
    if first is not None and first.kind == first.KEYWORD_ONLY:
        kwargs[first.name] = value
        return (), kwargs
    return (value,), kwargs


def _expected(script):
    names = [p.name for p in script.params or [] if p.kind != p.VAR_POSITIONAL]
    if not names:
        return "run()'s parameters"
    return "the key" + ("s " if len(names) > 1 else " ") + ", ".join(repr(n) for n in names)


def _schema_arguments(script, payload):
    from inference_schema.schema_decorators import _deserialize_input_argument

    params = [p for p in script.params or [] if p.kind != p.VAR_POSITIONAL]
    names = [p.name for p in params]
    inner = payload.get("Inputs")
    if "Inputs" not in names and isinstance(inner, dict) and any(n not in payload for n in names):
        # {"Inputs": {...}, "GlobalParameters": ...}: the form Azure ML's designer and swagger 3 clients send
        merged = dict(inner)
        for key, value in payload.items():
            if key != "Inputs":
                merged.setdefault(key, value)
        payload = merged

    kwargs = {}
    for p in params:
        if p.name in payload:
            value = payload[p.name]
        elif p.default is not p.empty:
            continue  # Python supplies the default
        else:
            raise _BadInput(f"A value is not provided for the {p.name!r} parameter.")
        param_type = script.inputs.get(p.name)
        if param_type is not None and script.converts.get(p.name, True):
            try:
                value = _deserialize_input_argument(value, param_type, p.name)
            except Exception as e:  # noqa: BLE001 - whatever the type raises, the input is at fault
                detail = str(e) or type(e).__name__
                raise _BadInput(f"parameter {p.name!r}: {detail}") from None
        kwargs[p.name] = value
    return kwargs


def _query_parameters(query):
    """As Azure parses a GET's parameters: each value as JSON when it parses, else as text; a repeated
    name gives a list."""
    from urllib.parse import parse_qsl

    values = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        values.setdefault(key, []).append(_maybe_json(value))
    return {k: v[0] if len(v) == 1 else v for k, v in values.items()}


def _maybe_json(text):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _response(script, result):
    parts = getattr(result, "_plinth_parts", None)
    if parts is not None and callable(parts):  # AMLResponse
        return parts()
    if script.output is not None:
        encode = getattr(script.output, "_plinth_encode", None)
        if encode is not None:
            result = encode(result)
    return 200, "application/json", None, json.dumps(result, default=_json_default).encode("utf-8")


# ---- JSON -------------------------------------------------------------------------------------------


def _json_default(o):
    """For json.dumps: numpy arrays and scalars, pandas frames and series (as records), dates, sets."""
    kind = type(o)
    module = kind.__module__ or ""
    if module.startswith("numpy"):
        tolist = getattr(o, "tolist", None)
        if tolist is not None:
            return tolist()
    elif module.startswith("pandas"):
        if kind.__name__ in ("DataFrame", "Series"):
            return json.loads(o.to_json(orient="records", date_format="iso"))
        isoformat = getattr(o, "isoformat", None)
        if isoformat is not None and kind.__name__ == "Timestamp":
            return isoformat()
        tolist = getattr(o, "tolist", None)
        if tolist is not None:
            return tolist()
        to_numpy = getattr(o, "to_numpy", None)
        if to_numpy is not None:
            return to_numpy().tolist()
    import datetime

    if isinstance(o, (datetime.date, datetime.time)):
        return o.isoformat()
    if isinstance(o, datetime.timedelta):
        return o.total_seconds()
    if isinstance(o, (set, frozenset)):
        return list(o)
    if isinstance(o, (bytes, bytearray)):
        try:
            return bytes(o).decode("utf-8")
        except UnicodeDecodeError:
            pass
    import decimal
    import uuid

    if isinstance(o, decimal.Decimal):
        return float(o)
    if isinstance(o, uuid.UUID):
        return str(o)
    raise TypeError(f"Object of type {kind.__name__} is not JSON serializable")
