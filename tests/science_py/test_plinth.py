"""plinth.infer / models / log over the door (I, M, L frames)."""
import unittest

import numpy as np

from door import DoorTest


class Infer(DoorTest):
    def setUp(self):
        super().setUp()
        self.seen = []

        def infer(request):
            self.seen.append(request)
            if request["model"] == "refuses":
                return {"error": "input 'X' has shape [1, 3], the model takes [-1, 10]", "invalid": True}
            if request["model"] == "broken":
                return {"error": "session failed", "invalid": False}
            x = request["inputs"][0]
            return {"outputs": [{"name": "variable", "datatype": "FP32", "shape": [x["shape"][0], 1],
                                 "data": [float(i) for i in range(x["shape"][0])]}]}

        self.host.infer = infer

    def test_lists_numpy_and_tensors(self):
        import plinth

        out = plinth.infer("diabetes", {"X": [[0.5] * 10, [1] * 10]})
        self.assertEqual(out, {"variable": [[0.0], [1.0]]})
        self.assertEqual(
            self.seen[-1],
            {"model": "diabetes", "inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 10], "data": [0.5] * 10 + [1.0] * 10}]},
        )
        for array, datatype in [
            (np.zeros((1, 2), dtype=np.float32), "FP32"),
            (np.zeros((1, 2), dtype=np.float64), "FP64"),
            (np.zeros((1, 2), dtype=np.int64), "INT64"),
            (np.zeros((1, 2), dtype=np.int32), "INT32"),
            (np.zeros((1, 2), dtype=bool), "BOOL"),
            (np.array([["a", "b"]]), "BYTES"),
            (np.array([["a", b"b"]], dtype=object), "BYTES"),
        ]:
            plinth.infer("m", {"X": array})
            sent = self.seen[-1]["inputs"][0]
            self.assertEqual((sent["datatype"], sent["shape"]), (datatype, [1, 2]), array.dtype)
        self.assertEqual(self.seen[-1]["inputs"][0]["data"], ["a", "b"])
        plinth.infer("m", {"X": [[1, 2]]})
        self.assertEqual(self.seen[-1]["inputs"][0]["datatype"], "INT64")
        plinth.infer("m", {"X": plinth.Tensor([[1, 2]], datatype="fp64")})
        self.assertEqual(self.seen[-1]["inputs"][0], {"name": "X", "datatype": "FP64", "shape": [1, 2], "data": [1.0, 2.0]})
        plinth.infer("m", {"X": plinth.Tensor(np.ones((2, 2), dtype=np.int64), "INT32")})
        self.assertEqual(self.seen[-1]["inputs"][0]["shape"], [2, 2])
        self.assertEqual(self.seen[-1]["inputs"][0]["data"], [1, 1, 1, 1])

    def test_errors(self):
        import plinth

        with self.assertRaises(plinth.BadRequest) as caught:
            plinth.infer("refuses", {"X": [[1.0, 2.0, 3.0]]})
        self.assertIn("the model takes", str(caught.exception))
        with self.assertRaises(RuntimeError):
            plinth.infer("broken", {"X": [[1.0]]})
        with self.assertRaises(plinth.BadRequest):
            plinth.infer("m", {"X": [[1.0], [1.0, 2.0]]})  # ragged
        with self.assertRaises(plinth.BadRequest):
            plinth.infer("m", {"X": plinth.Tensor([1], "COMPLEX")})

    def test_in_a_script_a_refused_input_is_a_bad_request(self):
        self.load(
            """
            import json
            import plinth
            def run(raw_data):
                return plinth.infer(json.loads(raw_data)["model"], {"X": [[1.0, 2.0, 3.0]]})
            """
        )
        self.assertEqual(self.ok_json('{"model": "ok"}'), {"variable": [[0.0]]})
        self.assertEqual(self.error('{"model": "refuses"}')["kind"], "bad_request")
        e = self.error('{"model": "broken"}')
        self.assertEqual(e, {"kind": "exception", "message": "RuntimeError: session failed (at score.py:4)"})

    def test_models_and_log(self):
        import plinth

        self.host.models = ["a", "b"]
        self.assertEqual(plinth.models(), ["a", "b"])
        plinth.log("ready")
        plinth.log("careful", level="WARNING")
        plinth.log(42, level="nonsense")
        self.assertEqual(
            self.host.logs(),
            [{"level": "info", "message": "ready"}, {"level": "warn", "message": "careful"}, {"level": "info", "message": "42"}],
        )
        self.assertEqual(plinth.MODEL_DIR, "/models")
        self.assertTrue(issubclass(plinth.BadRequest, ValueError))


if __name__ == "__main__":
    unittest.main()
