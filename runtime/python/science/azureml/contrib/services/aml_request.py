"""``@rawhttp`` and ``AMLRequest``, as Azure ML's inference server gives them to score.py::

    from azureml.contrib.services.aml_request import AMLRequest, rawhttp
    from azureml.contrib.services.aml_response import AMLResponse

    @rawhttp
    def run(request):
        if request.method != "POST":
            return AMLResponse("only POST", 405)
        rows = request.get_json()["data"]
        ...

AMLRequest offers what score.py scripts use of Flask's request: ``method``, ``path``, ``full_path``,
``url``, ``query_string``, ``args`` (first values; ``getlist``), ``headers`` (case-insensitive), ``data``,
``get_data(as_text=False)``, ``get_json(force=False, silent=False)``, ``json``, ``is_json``, ``form``,
``values``, ``content_type``, ``mimetype``, ``content_length``, ``stream``.
"""
import io
import json
from urllib.parse import parse_qsl

_rawHttpRequested = False


def rawhttp(func):
    """Marks run() as taking the whole HTTP request (an AMLRequest) instead of the body as text."""
    global _rawHttpRequested
    _rawHttpRequested = True
    try:
        func._plinth_rawhttp = True
    except (AttributeError, TypeError):
        pass
    return func


class _MultiDict:
    """An ordered multi-valued mapping: ``d[key]`` and ``get`` give the first value, ``getlist`` all."""

    def __init__(self, pairs=(), fold=False):
        self._fold = fold
        self._items = {}
        self._names = {}
        for key, value in pairs:
            k = key.lower() if fold else key
            self._names.setdefault(k, key)
            self._items.setdefault(k, []).append(value)

    def _key(self, key):
        return key.lower() if self._fold and isinstance(key, str) else key

    def __getitem__(self, key):
        values = self._items.get(self._key(key))
        if not values:
            raise KeyError(key)
        return values[0]

    def get(self, key, default=None, type=None):
        values = self._items.get(self._key(key))
        if not values:
            return default
        if type is None:
            return values[0]
        try:
            return type(values[0])
        except (ValueError, TypeError):
            return default

    def getlist(self, key, type=None):
        values = list(self._items.get(self._key(key), []))
        if type is None:
            return values
        out = []
        for v in values:
            try:
                out.append(type(v))
            except (ValueError, TypeError):
                pass
        return out

    def __contains__(self, key):
        return self._key(key) in self._items

    def __iter__(self):
        return iter(self._names[k] for k in self._items)

    def __len__(self):
        return len(self._items)

    def keys(self):
        return list(self)

    def values(self):
        return [v[0] for v in self._items.values()]

    def items(self, multi=False):
        if multi:
            return [(self._names[k], v) for k, vs in self._items.items() for v in vs]
        return [(self._names[k], vs[0]) for k, vs in self._items.items()]

    def lists(self):
        return [(self._names[k], list(vs)) for k, vs in self._items.items()]

    def to_dict(self, flat=True):
        if flat:
            return dict(self.items())
        return dict(self.lists())

    def __eq__(self, other):
        if isinstance(other, _MultiDict):
            return self.to_dict(flat=False) == other.to_dict(flat=False)
        if isinstance(other, dict):
            return self.to_dict() == other
        return NotImplemented

    def __repr__(self):
        return f"{type(self).__name__}({self.items(multi=True)!r})"


class Headers(_MultiDict):
    """Request headers: names match whatever their case."""

    def __init__(self, pairs=()):
        if isinstance(pairs, dict):
            pairs = pairs.items()
        super().__init__(pairs, fold=True)


class ImmutableMultiDict(_MultiDict):
    """Query or form parameters."""


def _mimetype(content_type):
    mimetype, _, params = content_type.partition(";")
    options = {}
    for part in params.split(";"):
        name, eq, value = part.strip().partition("=")
        if eq:
            options[name.strip().lower()] = value.strip().strip('"')
    return mimetype.strip().lower(), options


class AMLRequest:
    """The HTTP request given to a ``@rawhttp`` run()."""

    def __init__(self, method="GET", path="/", query="", headers=None, body=b"", request_id=None):
        self.method = str(method).upper()
        self.path = path or "/"
        if isinstance(query, (bytes, bytearray)):
            query = bytes(query).decode("utf-8", "replace")
        self.query_string = (query or "").encode("utf-8")
        self.headers = headers if isinstance(headers, Headers) else Headers(headers or {})
        self.args = ImmutableMultiDict(parse_qsl(query or "", keep_blank_values=True))
        if isinstance(body, str):
            body = body.encode("utf-8")
        self._data = bytes(body or b"")
        self.request_id = request_id
        self.environ = {}
        self.remote_addr = None
        self._form = None
        self._json = _UNSET

    def __repr__(self):
        return f"<AMLRequest {self.full_path!r} [{self.method}]>"

    # the URL
    @property
    def full_path(self):
        return f"{self.path}?{self.query_string.decode('utf-8', 'replace')}"

    @property
    def host(self):
        return self.headers.get("host", "localhost")

    @property
    def scheme(self):
        return self.headers.get("x-forwarded-proto", "http")

    @property
    def host_url(self):
        return f"{self.scheme}://{self.host}/"

    @property
    def base_url(self):
        return f"{self.scheme}://{self.host}{self.path}"

    @property
    def url(self):
        query = self.query_string.decode("utf-8", "replace")
        return self.base_url + (f"?{query}" if query else "")

    # the body
    @property
    def content_type(self):
        return self.headers.get("content-type")

    @property
    def mimetype(self):
        return _mimetype(self.content_type or "")[0]

    @property
    def mimetype_params(self):
        return _mimetype(self.content_type or "")[1]

    @property
    def content_length(self):
        return len(self._data)

    @property
    def is_json(self):
        mimetype = self.mimetype
        return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))

    @property
    def data(self):
        return self._data

    @property
    def stream(self):
        return io.BytesIO(self._data)

    def get_data(self, cache=True, as_text=False, parse_form_data=False):
        if as_text:
            charset = self.mimetype_params.get("charset", "utf-8")
            try:
                return self._data.decode(charset, "replace")
            except LookupError:
                return self._data.decode("utf-8", "replace")
        return self._data

    def get_json(self, force=False, silent=False, cache=True):
        """The body parsed as JSON. Without ``force`` the content type must be JSON. A body that is not JSON
        (or not declared as JSON) is the request's fault: plinth.BadRequest (a 400), or None with
        ``silent``."""
        if cache and self._json is not _UNSET and not force:
            return self._json
        if not (force or self.is_json):
            if silent:
                return None
            from plinth import BadRequest

            raise BadRequest(
                "Did not attempt to load JSON data because the request Content-Type was not 'application/json'."
            )
        try:
            value = json.loads(self._data)
        except (ValueError, RecursionError) as e:
            if silent:
                return None
            from plinth import BadRequest

            raise BadRequest(f"Failed to decode JSON object: {e}") from None
        if cache:
            self._json = value
        return value

    @property
    def json(self):
        return self.get_json()

    @property
    def form(self):
        if self._form is None:
            pairs = []
            if self.mimetype == "application/x-www-form-urlencoded":
                pairs = parse_qsl(self.get_data(as_text=True), keep_blank_values=True)
            self._form = ImmutableMultiDict(pairs)
        return self._form

    @property
    def values(self):
        return ImmutableMultiDict(self.args.items(multi=True) + self.form.items(multi=True))

    @property
    def files(self):
        return ImmutableMultiDict()

    @property
    def cookies(self):
        from http.cookies import SimpleCookie

        jar = SimpleCookie()
        try:
            jar.load(self.headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header: no cookies
            return {}
        return {k: m.value for k, m in jar.items()}


class _Unset:
    def __repr__(self):
        return "<unset>"


_UNSET = _Unset()
