"""Drives a Plinth host's gRPC listener with the real Python tritonclient.grpc: python grpc_client.py ADDR KEY.

Expects services "diabetes" (the Ridge model, version "1"), "alltypes" (tests/models/all_types) and
"adv" (the adversary entry script, no auth). Compares results with onnxruntime in Python; prints one
line per check and "N passed, 0 failed" at the end.
"""
import json
import pathlib
import sys

import grpc
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from client_common import SAMPLES, check, done, oip_type

addr, key = sys.argv[1], sys.argv[2]
repo = pathlib.Path(__file__).resolve().parents[2]
auth = {"authorization": f"Bearer {key}"}
client = grpcclient.InferenceServerClient(url=addr)
stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(addr))


def status_of(call):
    """The gRPC status code and message of a call that should fail."""
    try:
        call()
    except InferenceServerException as e:
        return e.status(), e.message()
    except grpc.RpcError as e:
        return str(e.code()), e.details()
    return None, "it succeeded"


ridge = ort.InferenceSession(str(repo / "examples/diabetes/model/model.onnx"), providers=["CPUExecutionProvider"])
rows = np.asarray(json.loads((repo / "examples/diabetes/sample.json").read_text())["data"], dtype=np.float32)
batch = np.concatenate([rows] * 4)

check("server live", client.is_server_live())
check("server ready", client.is_server_ready())
meta = client.get_server_metadata()
check("server metadata", meta.name == "plinth", meta)
check("model ready", client.is_model_ready("diabetes", headers=auth))
check("model ready by version", client.is_model_ready("diabetes", model_version="1", headers=auth))
m = client.get_model_metadata("diabetes", headers=auth)
check("model metadata", (m.inputs[0].name, m.inputs[0].datatype, list(m.inputs[0].shape)) == ("X", "FP32", [-1, 10]), m)
check("model metadata versions", list(m.versions) == ["1"], m)


def ridge_infer(data, version=""):
    x = grpcclient.InferInput("X", list(data.shape), "FP32")
    x.set_data_from_numpy(data)
    out = grpcclient.InferRequestedOutput("variable")
    return client.infer("diabetes", [x], outputs=[out], headers=auth, request_id="req-7", model_version=version)


r = ridge_infer(batch)
got, want = r.as_numpy("variable"), ridge.run(None, {"X": batch})[0]
check("ridge batch, raw contents both ways", got.shape == want.shape and np.allclose(got, want, rtol=1e-4, atol=1e-4), (got, want))
r = ridge_infer(rows[:1], version="1")
check("pinned version", r.get_response().model_version == "1" and
      np.allclose(r.as_numpy("variable"), ridge.run(None, {"X": rows[:1]})[0], rtol=1e-4), r.get_response())
check("request id echoed", r.get_response().id == "req-7", r.get_response())

# Typed contents in (what tritonclient does not send itself): the raw stub.
req = service_pb2.ModelInferRequest(model_name="diabetes")
inp = req.inputs.add(name="X", datatype="FP32", shape=[2, 10])
inp.contents.fp32_contents.extend(rows[:2].flatten().tolist())
resp = stub.ModelInfer(req, metadata=list(auth.items()))
out = np.frombuffer(resp.raw_output_contents[0], dtype=np.float32).reshape(list(resp.outputs[0].shape))
check("typed contents in, raw out", np.allclose(out, ridge.run(None, {"X": rows[:2]})[0], rtol=1e-4), out)

# Every datatype, raw both ways.
inputs, outputs = [], []
for name, arr in SAMPLES.items():
    i = grpcclient.InferInput(f"x_{name}", list(arr.shape), oip_type(name))
    i.set_data_from_numpy(arr)
    inputs.append(i)
    outputs.append(grpcclient.InferRequestedOutput(f"y_{name}"))
r = client.infer("alltypes", inputs, outputs=outputs, headers=auth)
for name, arr in SAMPLES.items():
    got = r.as_numpy(f"y_{name}")
    check(f"{name} round trip", got.shape == arr.shape and (got == arr).all(), (got, arr))

# An entry script gets the request as OIP JSON; its non-OIP answer comes back as one BYTES output.
x = grpcclient.InferInput("X", [1, 2], "INT64")
x.set_data_from_numpy(np.array([[4, 5]], dtype=np.int64))
r = client.infer("adv", [x])
answer = r.as_numpy("response")[0].decode()
check("entry script reads OIP JSON", '"name":"X"' in answer and '"data":[4,5]' in answer, answer)

# Errors: the status code says whose fault.
x = grpcclient.InferInput("X", [1, 10], "FP32")
x.set_data_from_numpy(rows[:1])
code, msg = status_of(lambda: client.infer("diabetes", [x]))
check("no credential: UNAUTHENTICATED", code == "StatusCode.UNAUTHENTICATED" and "Authorization" in msg, (code, msg))
code, msg = status_of(lambda: client.infer("diabetes", [x], headers={"authorization": "Bearer wrong"}))
check("wrong key: UNAUTHENTICATED", code == "StatusCode.UNAUTHENTICATED", (code, msg))
code, msg = status_of(lambda: client.infer("nosuch", [x], headers=auth))
check("unknown model: NOT_FOUND", code == "StatusCode.NOT_FOUND" and "nosuch" in msg, (code, msg))
code, msg = status_of(lambda: client.infer("diabetes", [x], headers=auth, model_version="9"))
check("unknown version: NOT_FOUND", code == "StatusCode.NOT_FOUND" and "no version 9" in msg, (code, msg))
code, msg = status_of(lambda: client.get_model_metadata("diabetes"))
check("metadata needs a credential", code == "StatusCode.UNAUTHENTICATED", (code, msg))
x9 = grpcclient.InferInput("X", [1, 9], "FP32")
x9.set_data_from_numpy(rows[:1, :9])
code, msg = status_of(lambda: client.infer("diabetes", [x9], headers=auth))
check("a shape the model refuses: INVALID_ARGUMENT", code == "StatusCode.INVALID_ARGUMENT" and "shape" in msg, (code, msg))

# Malformed messages: wrong tensor sizes, and bytes that are not protobuf at all.
req = service_pb2.ModelInferRequest(model_name="diabetes")
req.inputs.add(name="X", datatype="FP32", shape=[1, 10])
req.raw_input_contents.append(b"\0" * 8)
code, msg = status_of(lambda: stub.ModelInfer(req, metadata=list(auth.items())))
check("raw contents of the wrong size: INVALID_ARGUMENT", code == "StatusCode.INVALID_ARGUMENT" and "40 bytes" in msg, (code, msg))
req = service_pb2.ModelInferRequest(model_name="diabetes")
req.inputs.add(name="X", datatype="FP32", shape=[1000000000, 10])
req.inputs[0].contents.fp32_contents.extend([1.0])
code, msg = status_of(lambda: stub.ModelInfer(req, metadata=list(auth.items())))
check("a shape far beyond the data: INVALID_ARGUMENT", code == "StatusCode.INVALID_ARGUMENT" and "needs" in msg, (code, msg))
channel = grpc.insecure_channel(addr)
raw_call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
code, msg = status_of(lambda: raw_call(b"\xff\xff\xff\xff\x0f garbage", metadata=list(auth.items())))
check("a bad protobuf: INVALID_ARGUMENT", code == "StatusCode.INVALID_ARGUMENT", (code, msg))
code, msg = status_of(lambda: client.get_model_config("diabetes", headers=auth))
check("a method Plinth does not serve: UNIMPLEMENTED", code == "StatusCode.UNIMPLEMENTED", (code, msg))
check("still serving", client.is_server_live())

done()
