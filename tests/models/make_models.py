"""Writes the small ONNX models the protocol tests use.

    python tests/models/make_models.py     # writes all_types/model.onnx beside this file

small_mlp: a 16→64→4 MLP (weights seeded), for dynamic batching.
all_types: one input per ONNX Runtime datatype (x_bool ... x_bytes), each of shape [-1, 2], passed through
Identity to y_bool ... y_bytes, so every OIP datatype can be checked end to end.
"""
import pathlib

import onnx
from onnx import TensorProto, helper

HERE = pathlib.Path(__file__).resolve().parent

TYPES = {
    "bool": TensorProto.BOOL,
    "uint8": TensorProto.UINT8,
    "uint16": TensorProto.UINT16,
    "uint32": TensorProto.UINT32,
    "uint64": TensorProto.UINT64,
    "int8": TensorProto.INT8,
    "int16": TensorProto.INT16,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "fp16": TensorProto.FLOAT16,
    "fp32": TensorProto.FLOAT,
    "fp64": TensorProto.DOUBLE,
    "bytes": TensorProto.STRING,
}


def all_types():
    inputs, outputs, nodes = [], [], []
    for name, ty in TYPES.items():
        inputs.append(helper.make_tensor_value_info(f"x_{name}", ty, ["batch", 2]))
        outputs.append(helper.make_tensor_value_info(f"y_{name}", ty, ["batch", 2]))
        nodes.append(helper.make_node("Identity", [f"x_{name}"], [f"y_{name}"]))
    graph = helper.make_graph(nodes, "all_types", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def small_mlp():
    """A 16→64→4 MLP with seeded weights: batch-size independent results, for the batching tests."""
    import sys

    sys.path.insert(0, str(HERE.parents[1] / "bench"))
    from make_models import mlp

    return mlp(sizes=(16, 64, 4), seed=3)


if __name__ == "__main__":
    for name, make in [("all_types", all_types), ("small_mlp", small_mlp)]:
        out = HERE / name / "model.onnx"
        out.parent.mkdir(exist_ok=True)
        onnx.save(make(), out)
        print(f"wrote {out}")
