"""What the HTTP and the gRPC client tests share: the checks they print, and one sample tensor per
inference-protocol datatype for the all-types model (tests/models/all_types: input x_NAME comes back as
output y_NAME)."""
import sys

import numpy as np

passed = 0


def check(name, cond, detail=""):
    """Prints `ok NAME`, or `FAIL NAME: DETAIL` and exits 1."""
    global passed
    if not cond:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    passed += 1
    print(f"ok {name}", flush=True)


def done():
    print(f"{passed} passed, 0 failed")


SAMPLES = {
    "bool": np.array([[True, False], [False, True]]),
    "uint8": np.array([[0, 255], [7, 8]], dtype=np.uint8),
    "uint16": np.array([[0, 65535], [7, 8]], dtype=np.uint16),
    "uint32": np.array([[0, 4294967295], [7, 8]], dtype=np.uint32),
    "uint64": np.array([[0, 2**63], [7, 8]], dtype=np.uint64),
    "int8": np.array([[-128, 127], [7, 8]], dtype=np.int8),
    "int16": np.array([[-32768, 32767], [7, 8]], dtype=np.int16),
    "int32": np.array([[-2**31, 2**31 - 1], [7, 8]], dtype=np.int32),
    "int64": np.array([[-2**62, 2**62], [7, 8]], dtype=np.int64),
    "fp16": np.array([[0.5, -1.25], [3.0, 65504.0]], dtype=np.float16),
    "fp32": np.array([[0.5, -1.25], [3.0, 1e30]], dtype=np.float32),
    "fp64": np.array([[0.5, -1.25], [3.0, 1e300]], dtype=np.float64),
    "bytes": np.array([[b"plinth", b""], [b"caf\xc3\xa9", b"x" * 300]], dtype=np.object_),
}


def oip_type(name):
    """The protocol's datatype name for a sample."""
    return {"fp16": "FP16", "fp32": "FP32", "fp64": "FP64", "bytes": "BYTES"}.get(name, name.upper())
