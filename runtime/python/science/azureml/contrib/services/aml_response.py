"""``AMLResponse``: what run() returns to choose the status, body and headers itself, as with Azure ML::

    return AMLResponse("created", 201)
    return AMLResponse({"error": "no such id"}, 404, json_str=True)
    return AMLResponse(png_bytes, 200, {"Content-Type": "image/png"})

As Azure's: ``json_str=True`` sends ``json.dumps(message)`` as application/json; otherwise a str is sent
as UTF-8 (text/html unless the headers name a Content-Type, as Flask does) and bytes as they are;
``message=None`` sends ``{}``. (A dict or list message without ``json_str``, which Flask refuses, is sent
as JSON.) Header values with commas become repeated headers on Azure; here they are sent joined.
"""
import json

_DEFAULT_TEXT = "text/html; charset=utf-8"
_JSON = "application/json"


def _dumps(value):
    from plinth_science import _json_default

    return json.dumps(value, default=_json_default)


class AMLResponse:
    """An HTTP response chosen by run()."""

    def __init__(self, message, status_code, response_headers=None, json_str=False, run_function_failed=False,
                 headers=None):
        self.status_code = int(str(status_code).split(" ", 1)[0])
        merged = {}
        for source in (response_headers, headers):
            if source:
                for name, value in dict(source).items():
                    merged[str(name)] = str(value)
        content_type = None
        for name in list(merged):
            if name.lower() == "content-type":
                content_type = merged.pop(name)

        if message is None:
            body, kind = b"{}", _JSON
        elif json_str:
            body, kind = _dumps(message).encode("utf-8"), _JSON
        elif isinstance(message, (bytes, bytearray, memoryview)):
            body, kind = bytes(message), _DEFAULT_TEXT
        elif isinstance(message, str):
            body, kind = message.encode("utf-8"), _DEFAULT_TEXT
        else:
            body, kind = _dumps(message).encode("utf-8"), _JSON
        self._body = body
        self.content_type = content_type or kind
        self.headers = merged
        self.run_function_failed = run_function_failed

    @property
    def status(self):
        return str(self.status_code)

    @property
    def mimetype(self):
        return self.content_type.split(";", 1)[0].strip()

    @property
    def data(self):
        return self._body

    def get_data(self, as_text=False):
        return self._body.decode("utf-8", "replace") if as_text else self._body

    def __repr__(self):
        return f"<AMLResponse {self.status_code} {self.content_type!r} {len(self._body)} bytes>"

    def _plinth_parts(self):
        """(status, content type, other headers, body) for Plinth's driver."""
        return self.status_code, self.content_type, dict(self.headers), self._body
