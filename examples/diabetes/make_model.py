"""Trains the classic Azure ML example, scikit-learn Ridge on the diabetes dataset, and converts it to ONNX.

    python make_model.py              # writes model.onnx beside this file
    python make_model.py --predict F  # prints scikit-learn and onnxruntime predictions for F's {"data": ...}

Training is deterministic (the dataset ships with scikit-learn, Ridge has a closed form), so the reference
predictions can be recomputed anywhere.
"""
import argparse
import json
import pathlib

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

HERE = pathlib.Path(__file__).resolve().parent


def train():
    x, y = load_diabetes(return_X_y=True)
    return Ridge(alpha=0.5).fit(x, y)


def convert(model, path):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(model, initial_types=[("X", FloatTensorType([None, 10]))], target_opset=17)
    path.write_bytes(onx.SerializeToString())


def predict(model, path, data_file):
    import onnxruntime as ort

    data = np.asarray(json.loads(pathlib.Path(data_file).read_text())["data"], dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"X": data})[0].reshape(-1)
    print(json.dumps({"sklearn": model.predict(data.astype(np.float64)).tolist(), "onnxruntime": onnx_out.tolist()}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(HERE / "model" / "model.onnx"))
    parser.add_argument("--predict", metavar="JSON_FILE")
    args = parser.parse_args()
    model = train()
    out = pathlib.Path(args.out)
    if args.predict:
        predict(model, out, args.predict)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        convert(model, out)
        print(f"wrote {out}")
