"""Drives a Plinth host with the real Python tritonclient: python oip_client.py URL KEY.

Expects services "diabetes" (the Ridge model) and "alltypes" (tests/models/all_types). Compares results
with onnxruntime in Python to 1e-4; prints one line per check and "N passed, 0 failed" at the end.
"""
import json
import pathlib
import sys

import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from client_common import SAMPLES, check, done, oip_type

url, key = sys.argv[1], sys.argv[2]
repo = pathlib.Path(__file__).resolve().parents[2]
def auth():
    # A fresh dict per call: tritonclient adds Inference-Header-Content-Length to the dict it is given.
    return {"Authorization": f"Bearer {key}"}
client = httpclient.InferenceServerClient(url=url.replace("http://", ""))


ridge = ort.InferenceSession(str(repo / "examples/diabetes/model/model.onnx"), providers=["CPUExecutionProvider"])
rows = np.asarray(json.loads((repo / "examples/diabetes/sample.json").read_text())["data"], dtype=np.float32)
batch = np.concatenate([rows] * 4)
want_batch = ridge.run(None, {"X": batch})[0]

check("server live", client.is_server_live())
check("server ready", client.is_server_ready())
meta = client.get_server_metadata()
check("server metadata", "binary_tensor_data" in meta["extensions"], meta)
check("model ready", client.is_model_ready("diabetes", headers=auth()))
check("model ready by version", client.is_model_ready("diabetes", model_version="1", headers=auth()))
m = client.get_model_metadata("diabetes", headers=auth())
check("model metadata", m["inputs"][0] == {"name": "X", "datatype": "FP32", "shape": [-1, 10]}, m)


def ridge_infer(binary_in, binary_out, data=batch, version=""):
    x = httpclient.InferInput("X", list(data.shape), "FP32")
    x.set_data_from_numpy(data, binary_data=binary_in)
    out = httpclient.InferRequestedOutput("variable", binary_data=binary_out)
    r = client.infer("diabetes", [x], outputs=[out], headers=auth(), request_id="req-7", model_version=version)
    return r


for binary_in in (False, True):
    for binary_out in (False, True):
        r = ridge_infer(binary_in, binary_out)
        got = r.as_numpy("variable")
        check(f"ridge batch binary_in={binary_in} binary_out={binary_out}",
              got.shape == want_batch.shape and np.allclose(got, want_batch, rtol=1e-4, atol=1e-4), (got, want_batch))
r = ridge_infer(True, True, data=rows[:1], version="1")
check("single row, version path", np.allclose(r.as_numpy("variable"), ridge.run(None, {"X": rows[:1]})[0], rtol=1e-4))
check("request id echoed", r.get_response()["id"] == "req-7", r.get_response())

# Every datatype, binary in and out, and JSON in and out.
for binary in (True, False):
    inputs, outputs = [], []
    for name, arr in SAMPLES.items():
        i = httpclient.InferInput(f"x_{name}", list(arr.shape), oip_type(name))
        i.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(i)
        outputs.append(httpclient.InferRequestedOutput(f"y_{name}", binary_data=binary))
    r = client.infer("alltypes", inputs, outputs=outputs, headers=auth())
    for name, arr in SAMPLES.items():
        got = r.as_numpy(f"y_{name}")
        if name == "bytes":
            got = np.array([[v if isinstance(v, bytes) else str(v).encode() for v in row] for row in got], dtype=np.object_)
        check(f"{name} binary={binary}", got.shape == arr.shape and (got == arr).all(), (got, arr))

# Without a key: 401.
x = httpclient.InferInput("X", [1, 10], "FP32")
x.set_data_from_numpy(rows[:1])
try:
    client.infer("diabetes", [x])
    check("no key is refused", False, "inference without a key succeeded")
except InferenceServerException as e:
    check("no key is refused", "Authorization" in str(e), str(e))

done()
