"""The diabetes Ridge example's score.py, as an Azure ML user writes it; plinth.infer runs the ONNX model."""
import json
import os

import plinth

FEATURES = 10


def init():
    global model_name
    # The registered model's files are where Azure ML puts them.
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model.onnx")
    if not os.path.exists(model_path):
        raise RuntimeError(f"{model_path} is missing")
    model_name = "diabetes"
    plinth.log("diabetes model ready")


def run(raw_data):
    data = json.loads(raw_data)["data"]
    for i, row in enumerate(data):
        if len(row) != FEATURES:
            raise plinth.BadRequest(f"row {i} has {len(row)} features, the model takes {FEATURES}")
    outputs = plinth.infer(model_name, {"X": data})
    predictions = [row[0] for row in outputs["variable"]]
    return {"predictions": predictions}
