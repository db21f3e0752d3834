"""The canonical Azure ML entry script (a scikit-learn Ridge pickled with joblib, loaded from
AZUREML_MODEL_DIR) and azureml.core.model.Model.get_model_path."""
import json
import os
import shutil
import tempfile
import unittest

from door import DoorTest

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "azure-sklearn")

# The example's own files: the unchanged Azure score.py, and the model its make_model.py trains.
with open(os.path.join(EXAMPLE, "score.py"), encoding="utf-8") as f:
    CANONICAL = f.read()


def train_ridge(folder):
    """The example's Ridge (make_model.train), pickled to folder/model.pkl; returns (model, X)."""
    import importlib.util

    import joblib
    from sklearn.datasets import load_diabetes

    spec = importlib.util.spec_from_file_location("make_model", os.path.join(EXAMPLE, "make_model.py"))
    make_model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_model)
    model = make_model.train()
    joblib.dump(model, os.path.join(folder, "model.pkl"))
    X, _ = load_diabetes(return_X_y=True)
    return model, X


class CanonicalScript(DoorTest):
    @classmethod
    def setUpClass(cls):
        cls.models = tempfile.mkdtemp(prefix="plinth-models-")
        cls.model, cls.X = train_ridge(cls.models)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.models, True)

    def test_predictions_match_scikit_learn(self):
        os.environ["AZUREML_MODEL_DIR"] = self.models
        self.assertTrue(self.load(CANONICAL), self.host.errors())
        rows = self.X[:5].tolist()
        got = self.ok_json(json.dumps({"data": rows}))
        expected = self.model.predict(self.X[:5]).tolist()
        self.assertEqual(len(got), 5)
        for a, b in zip(got, expected):
            self.assertAlmostEqual(a, b, places=9)

    def test_a_missing_key_names_the_line(self):
        os.environ["AZUREML_MODEL_DIR"] = self.models
        self.load(CANONICAL)
        self.assertEqual(self.error('{"rows": []}'), {"kind": "exception", "message": "KeyError: 'data' (at score.py:15)"})

    def test_a_missing_model_fails_init(self):
        os.environ["AZUREML_MODEL_DIR"] = self.dir
        self.assertFalse(self.load(CANONICAL))
        message = self.host.errors()[-1]["message"]
        self.assertTrue(message.startswith("FileNotFoundError: "), message)
        # The script's line, then what the model folder holds.
        self.assertTrue(message.endswith(f"(at score.py:11); {self.dir} holds: score.py"), message)


class GetModelPath(DoorTest):
    def make(self, *paths):
        root = tempfile.mkdtemp(prefix="plinth-models-")
        self.addCleanup(shutil.rmtree, root, True)
        for path in paths:
            full = os.path.join(root, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w") as f:
                f.write("x")
        os.environ["AZUREML_MODEL_DIR"] = root
        return root

    def test_one_model_with_its_files_in_the_folder(self):
        from azureml.core.model import Model

        root = self.make("model.pkl")
        self.host.models = ["diabetes"]
        self.assertEqual(Model.get_model_path("diabetes"), os.path.join(root, "model.pkl"))
        root = self.make("model.onnx", "vocab.txt")
        self.assertEqual(Model.get_model_path("diabetes"), root)

    def test_one_model_that_the_host_does_not_know(self):
        from azureml.core.model import Model
        from azureml.exceptions import ModelNotFoundException

        self.make("model.pkl")
        self.host.models = ["diabetes"]
        with self.assertRaises(ModelNotFoundException) as caught:
            Model.get_model_path("other")
        self.assertIn("'other'", str(caught.exception))
        self.assertIn("diabetes", str(caught.exception))

    def test_several_models_by_name_and_version(self):
        from azureml.core import Model
        from azureml.exceptions import ModelNotFoundException

        root = self.make("a/1/model.pkl", "a/2/model.pkl", "a/10/weights/w.bin", "b/3/x.onnx", "b/3/y.onnx")
        self.host.models = ["a", "b"]
        self.assertEqual(Model.get_model_path("a"), os.path.join(root, "a", "10", "weights"))
        self.assertEqual(Model.get_model_path("a", version=2), os.path.join(root, "a", "2", "model.pkl"))
        self.assertEqual(Model.get_model_path("b"), os.path.join(root, "b", "3"))
        with self.assertRaises(ModelNotFoundException) as caught:
            Model.get_model_path("a", version=5)
        self.assertIn("'a' version 5", str(caught.exception))
        with self.assertRaises(ModelNotFoundException) as caught:
            Model.get_model_path("c")
        self.assertIn("'c' not found", str(caught.exception))
        self.assertIn("a, b", str(caught.exception))

    def test_in_a_score_script(self):
        root = self.make("m/1/model.txt", "n/1/model.txt")
        self.load(
            """
            from azureml.core.model import Model
            def init():
                global path
                path = Model.get_model_path("n")
            def run(raw_data):
                return path
            """
        )
        self.assertEqual(self.ok_json("x"), os.path.join(root, "n", "1", "model.txt"))

    def test_not_found_fails_init_naming_the_model(self):
        self.make("m/1/model.txt")
        self.host.models = ["m"]
        self.assertFalse(
            self.load(
                """
                from azureml.core.model import Model
                def init():
                    Model.get_model_path("missing")
                def run(raw_data):
                    return 1
                """
            )
        )
        message = self.host.errors()[-1]["message"]
        self.assertTrue(message.startswith("ModelNotFoundException: Model 'missing' not found"), message)
        self.assertTrue(message.endswith("(at score.py:3)"), message)


if __name__ == "__main__":
    unittest.main()
