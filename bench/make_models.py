"""Writes the benchmark models: a dense MLP 256→1024→1024→10 with random (seeded) weights, and with
`--large` also a GPU-sized one, 1024→4096→4096→4096→10 (about 150 MB), for bench/gpu/run.

    python bench/make_models.py          # writes bench/models/mlp/model.onnx (about 5 MB, not committed)
    python bench/make_models.py --large  # and bench/models/mlp4096/model.onnx

The diabetes Ridge comes from examples/diabetes/make_model.py.
"""
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = pathlib.Path(__file__).resolve().parent


def mlp(sizes=(256, 1024, 1024, 10), seed=7):
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "x"
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        b = (rng.standard_normal(n_out) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        last = i == len(sizes) - 2
        out = "y" if last else f"a{i}"
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [out if last else f"z{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", sizes[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def save(model, name):
    out = HERE / "models" / name / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    import sys

    save(mlp(), "mlp")
    if "--large" in sys.argv[1:]:
        save(mlp((1024, 4096, 4096, 4096, 10)), "mlp4096")
