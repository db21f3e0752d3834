"""Trains the example's model as an Azure ML tutorial does: a scikit-learn Ridge on the diabetes data,
pickled with joblib.

    python examples/azure-sklearn/make_model.py [FOLDER]          # writes FOLDER/model.pkl (default: model/)
    python examples/azure-sklearn/make_model.py --predict FILE    # scikit-learn's answer for FILE's rows
"""
import json
import os
import sys

import joblib
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

HERE = os.path.dirname(os.path.abspath(__file__))


def train():
    X, y = load_diabetes(return_X_y=True)
    return Ridge(alpha=0.5).fit(X, y)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--predict"]:
        rows = json.load(open(sys.argv[2]))["data"]
        print(json.dumps(train().predict(rows).tolist()))
    else:
        folder = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "model")
        os.makedirs(folder, exist_ok=True)
        joblib.dump(train(), os.path.join(folder, "model.pkl"))
        print(f"wrote {os.path.join(folder, 'model.pkl')}")
