"""A fake host for plinth_science's door: a `_host` module put in sys.modules that answers the frames
(Q the queued requests, M the model names, I through a function) and records every frame it is sent."""
import json
import os
import shutil
import sys
import tempfile
import textwrap
import types
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCIENCE = os.path.join(REPO, "runtime", "python", "science")
# Only the SDK's shared modules are imported from its folder: the scientific `plinth` comes first.
SDK = os.path.join(REPO, "plugins", "sdk-python")
for folder in (SDK, SCIENCE):
    if folder not in sys.path:
        sys.path.insert(0, folder)


class FakeHost:
    def __init__(self):
        self.frames = []
        self.requests = []
        self.models = []
        self.infer = None

    def call(self, frame):
        frame = bytes(frame)
        self.frames.append(frame)
        op = frame[:1]
        if op == b"Q":
            head, body = self.requests.pop(0)
            return json.dumps(head).encode("utf-8") + b"\n" + body
        if op == b"M":
            return json.dumps(self.models).encode("utf-8")
        if op == b"I":
            return json.dumps(self.infer(json.loads(frame[1:]))).encode("utf-8")
        return b""

    def sent(self, op):
        return [f[1:] for f in self.frames if f[:1] == op]

    def errors(self):
        return [json.loads(f) for f in self.sent(b"E")]

    def responses(self):
        out = []
        for f in self.sent(b"R"):
            head, _, body = f.partition(b"\n")
            out.append((json.loads(head), body))
        return out

    def schemas(self):
        return [json.loads(f) for f in self.sent(b"S")]

    def logs(self):
        return [json.loads(f) for f in self.sent(b"L")]


def request(body=b"", method="POST", headers=None, query="", path="/api/v1/service/x/score"):
    if isinstance(body, str):
        body = body.encode("utf-8")
    elif not isinstance(body, bytes):
        body = json.dumps(body).encode("utf-8")
    head = {
        "method": method,
        "path": path,
        "query": query,
        "headers": headers if headers is not None else {"content-type": "application/json"},
        "requestId": "req-1",
    }
    return head, body


class DoorTest(unittest.TestCase):
    """Each test gets a fresh fake host and a temporary source folder for its score.py."""

    def setUp(self):
        self.host = FakeHost()
        self._saved_host = sys.modules.get("_host")
        module = types.ModuleType("_host")
        module.call = self.host.call
        sys.modules["_host"] = module
        self.dir = tempfile.mkdtemp(prefix="plinth-science-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self._saved_env = dict(os.environ)

    def tearDown(self):
        if self._saved_host is None:
            sys.modules.pop("_host", None)
        else:
            sys.modules["_host"] = self._saved_host
        os.environ.clear()
        os.environ.update(self._saved_env)
        sys.modules.pop("score", None)

    def write(self, source, name="score.py", folder=None):
        path = os.path.join(folder or self.dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(textwrap.dedent(source).lstrip("\n"))
        return path

    def load(self, source=None):
        import plinth_science

        if source is not None:
            self.write(source)
        return plinth_science.load(self.dir, "score")

    def call(self, body=b"", **kwargs):
        """Queues one request, serves it; returns ("R", header, body) or ("E", error)."""
        import plinth_science

        self.host.requests.append(request(body, **kwargs))
        before_r, before_e = len(self.host.responses()), len(self.host.errors())
        ok = plinth_science.call()
        responses, errors = self.host.responses(), self.host.errors()
        if ok:
            self.assertEqual(len(responses), before_r + 1)
            head, payload = responses[-1]
            return "R", head, payload
        self.assertEqual(len(errors), before_e + 1, "call() returned False without an E frame")
        return "E", errors[-1]

    def ok_json(self, body=b"", **kwargs):
        result = self.call(body, **kwargs)
        self.assertEqual(result[0], "R", result)
        _, head, payload = result
        self.assertEqual(head["status"], 200, head)
        self.assertEqual(head["contentType"], "application/json")
        return json.loads(payload)

    def error(self, body=b"", **kwargs):
        result = self.call(body, **kwargs)
        self.assertEqual(result[0], "E", result)
        return result[1]


try:
    import pandas  # noqa: F401

    HAVE_PANDAS = True
except ImportError:
    HAVE_PANDAS = False
