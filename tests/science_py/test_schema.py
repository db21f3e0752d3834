"""inference-schema scripts: numpy, pandas and standard Python parameter types, the S frame's swagger
schemas, decoding failures as bad requests, and decorated functions called directly."""
import unittest

import numpy as np

from door import HAVE_PANDAS, DoorTest

NUMPY_SCRIPT = """
import numpy as np
from inference_schema.schema_decorators import input_schema, output_schema
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType

def init():
    global weights
    weights = np.arange(10, dtype=np.float64)

@input_schema("data", NumpyParameterType(np.array([[0.1] * 10])))
@output_schema(NumpyParameterType(np.array([1.5])))
def run(data):
    assert isinstance(data, np.ndarray) and data.dtype == np.float64, (type(data), data.dtype)
    return data @ weights
"""


class NumpySchema(DoorTest):
    def test_decodes_and_encodes(self):
        self.assertTrue(self.load(NUMPY_SCRIPT))
        rows = [[1] * 10, [0.5] * 10]
        self.assertEqual(self.ok_json({"data": rows}), [45.0, 22.5])
        # Azure's wrapped form
        self.assertEqual(self.ok_json({"Inputs": {"data": rows[:1]}}), [45.0])

    def test_the_schema_frame(self):
        self.load(NUMPY_SCRIPT)
        self.assertEqual(len(self.host.schemas()), 1)
        schema = self.host.schemas()[0]
        self.assertEqual(
            schema["input"],
            {
                "type": "object",
                "properties": {
                    "data": {
                        "type": "array",
                        "items": {"type": "array", "items": {"type": "number", "format": "double"}},
                        "format": "numpy.ndarray",
                    }
                },
                "example": {"data": [[0.1] * 10]},
            },
        )
        self.assertEqual(
            schema["output"],
            {"type": "array", "items": {"type": "number", "format": "double"}, "example": [1.5], "format": "numpy.ndarray"},
        )

    def test_a_wrong_shape_is_a_bad_request_naming_the_parameter(self):
        self.load(NUMPY_SCRIPT)
        e = self.error({"data": [[1, 2, 3]]})
        self.assertEqual(e["kind"], "bad_request")
        self.assertIn("'data'", e["message"])
        self.assertIn("expected shape (-1, 10)", e["message"])
        self.assertIn("got (1, 3)", e["message"])
        e = self.error({"data": [1.0] * 10})
        self.assertIn("expected shape (-1, 10), got (10,)", e["message"])

    def test_bad_values_are_bad_requests(self):
        self.load(NUMPY_SCRIPT)
        cases = {
            "not json": "not valid JSON",
            "[1, 2]": "JSON object",
            "": "empty",
        }
        for body, words in cases.items():
            e = self.error(body)
            self.assertEqual(e["kind"], "bad_request", body)
            self.assertIn(words, e["message"], body)
        e = self.error({"other": 1})
        self.assertEqual(e, {"kind": "bad_request", "message": "A value is not provided for the 'data' parameter."})
        e = self.error({"data": [["a"] * 10]})
        self.assertEqual(e["kind"], "bad_request")
        self.assertTrue(e["message"].startswith("parameter 'data': Invalid input array"), e)
        e = self.error({"data": "text"})
        self.assertIn("parameter 'data': Invalid input format: expected an array of items, got a string", e["message"])
        e = self.error({"data": [[1] * 10, [1] * 9]})
        self.assertIn("parameter 'data'", e["message"])

    def test_an_exception_in_a_decorated_run_is_still_the_scripts(self):
        self.load(
            """
            import numpy as np
            from inference_schema.schema_decorators import input_schema
            from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType

            @input_schema("data", NumpyParameterType(np.array([[1.0, 2.0]])))
            def run(data):
                return 1 / 0
            """
        )
        self.assertEqual(self.error({"data": [[1, 2]]}), {"kind": "exception", "message": "ZeroDivisionError: division by zero (at score.py:7)"})

    def test_decorated_functions_work_when_called_directly(self):
        from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
        from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
        from inference_schema.schema_decorators import input_schema, output_schema

        @input_schema("scale", StandardPythonParameterType(2.0))
        @input_schema("data", NumpyParameterType(np.array([[1, 2]], dtype=np.int32)))
        @output_schema(NumpyParameterType(np.array([1.0])))
        def run(data, scale=1.0):
            return data.dtype.name, data.sum() * scale

        self.assertEqual(run([[1, 2], [3, 4]]), ("int32", 10.0))
        self.assertEqual(run(data=[[1, 2]], scale=3), ("int32", 9))
        self.assertEqual(run(np.array([[1.5, 2.5]])), ("float64", 4.0))  # already an array: unchanged
        with self.assertRaises(ValueError):
            run([[1, 2, 3]])
        self.assertEqual(set(run._plinth_input_schema), {"data", "scale"})
        self.assertIsInstance(run._plinth_output_schema, NumpyParameterType)
        self.assertEqual(run.__name__, "run")

    def test_structured_and_datetime_arrays(self):
        from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType

        sample = np.array([("Sarah", (8.0, 7.0)), ("John", (6.0, 7.0))], dtype=[("name", "U16"), ("grades", "f8", (2,))])
        t = NumpyParameterType(sample)
        self.assertEqual(
            t.input_to_swagger(),
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "grades": {"type": "array", "items": {"type": "number", "format": "double"}},
                    },
                },
                "example": [{"name": "Sarah", "grades": [8.0, 7.0]}, {"name": "John", "grades": [6.0, 7.0]}],
                "format": "numpy.ndarray",
            },
        )
        decoded = t.deserialize_input([{"name": "Ann", "grades": [1, 2]}, ["Bob", [3, 4]]])
        self.assertEqual(decoded["name"].tolist(), ["Ann", "Bob"])
        self.assertEqual(decoded["grades"].tolist(), [[1.0, 2.0], [3.0, 4.0]])

        when = NumpyParameterType(np.array(["2024-01-02T03:04:05"], dtype="datetime64[s]"))
        self.assertEqual(when.input_to_swagger()["items"], {"type": "string", "format": "date-time"})
        self.assertEqual(str(when.deserialize_input(["2025-06-07T08:09:10"])[0]), "2025-06-07T08:09:10")


class StandardSchema(DoorTest):
    def test_several_parameters_nested_types_and_defaults(self):
        self.load(
            """
            import numpy as np
            from inference_schema.schema_decorators import input_schema, output_schema
            from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
            from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType

            @input_schema("Inputs", StandardPythonParameterType({"data": NumpyParameterType(np.array([[1.0, 2.0]]))}))
            @input_schema("GlobalParameters", StandardPythonParameterType(1.0))
            @output_schema(StandardPythonParameterType({"total": 3.0, "method": "sum"}))
            def run(Inputs, GlobalParameters, method="sum"):
                data = Inputs["data"]
                assert isinstance(data, np.ndarray)
                return {"total": data.sum() * GlobalParameters, "method": method}
            """
        )
        got = self.ok_json({"Inputs": {"data": [[1, 2], [3, 4]]}, "GlobalParameters": 2})
        self.assertEqual(got, {"total": 20.0, "method": "sum"})
        got = self.ok_json({"Inputs": {"data": [[1, 2]]}, "GlobalParameters": 1.0, "method": "m"})
        self.assertEqual(got, {"total": 3.0, "method": "m"})

        e = self.error({"Inputs": {"data": [[1, 2, 3]]}, "GlobalParameters": 1.0})
        self.assertEqual(e["kind"], "bad_request")
        self.assertIn("parameter 'Inputs': in 'data': Invalid input array: expected shape (-1, 2)", e["message"])
        e = self.error({"Inputs": {"data": [[1, 2]]}, "GlobalParameters": "x"})
        self.assertEqual(
            e["message"], "parameter 'GlobalParameters': Invalid input data type to parse. Expected: float but got str"
        )

        schema = self.host.schemas()[0]
        self.assertEqual(list(schema["input"]["properties"]), ["Inputs", "GlobalParameters", "method"])
        self.assertEqual(schema["input"]["properties"]["method"], {})
        self.assertEqual(schema["input"]["example"], {"Inputs": {"data": [[1.0, 2.0]]}, "GlobalParameters": 1.0, "method": ""})
        self.assertEqual(
            schema["input"]["properties"]["Inputs"],
            {
                "type": "object",
                "required": ["data"],
                "properties": {
                    "data": {"type": "array", "items": {"type": "array", "items": {"type": "number", "format": "double"}},
                             "format": "numpy.ndarray"}
                },
            },
        )
        self.assertEqual(
            schema["output"],
            {
                "type": "object",
                "required": ["total", "method"],
                "properties": {"total": {"type": "number", "format": "double"}, "method": {"type": "string"}},
                "example": {"total": 3.0, "method": "sum"},
            },
        )

    def test_output_schema_only_takes_the_body_as_an_object(self):
        # As Azure: any inference-schema decorator makes run's parameters keys of a JSON body.
        self.load(
            """
            from inference_schema.schema_decorators import output_schema
            from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType

            @output_schema(StandardPythonParameterType(11))
            def run(num):
                return num + 10
            """
        )
        self.assertEqual(self.ok_json({"num": 1}), 11)
        self.assertEqual(self.host.schemas()[0]["input"], None)
        self.assertEqual(self.host.schemas()[0]["output"], {"type": "integer", "format": "int64", "example": 11})

    def test_convert_false_passes_json_values(self):
        self.load(
            """
            import numpy as np
            from inference_schema.schema_decorators import input_schema
            from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType

            @input_schema("data", NumpyParameterType(np.array([[1.0, 2.0]])), convert_to_provided_type=False)
            def run(data):
                return type(data).__name__
            """
        )
        self.assertEqual(self.ok_json({"data": [[1, 2, 3]]}), "list")

    def test_standard_types(self):
        import datetime

        from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType

        self.assertEqual(StandardPythonParameterType(1.0).deserialize_input(3), 3)
        with self.assertRaises(ValueError):
            StandardPythonParameterType(1).deserialize_input("1")
        self.assertEqual(StandardPythonParameterType(b"x").deserialize_input("aGk="), b"hi")
        when = StandardPythonParameterType(datetime.datetime(2020, 1, 2, 3, 4, 5))
        self.assertEqual(when.deserialize_input("2021-02-03T04:05:06"), datetime.datetime(2021, 2, 3, 4, 5, 6))
        self.assertEqual(
            when.input_to_swagger(), {"type": "string", "format": "date-time", "example": "2020-01-02 03:04:05.000000 +0000"}
        )
        self.assertEqual(
            StandardPythonParameterType(["a", "b"]).input_to_swagger(),
            {"type": "array", "items": {"type": "string"}, "example": ["a", "b"]},
        )


PANDAS_SCRIPT = """
import pandas as pd
from inference_schema.schema_decorators import input_schema, output_schema
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType

sample = pd.DataFrame({"age": [25, 26], "height": [1.7, 1.8], "name": ["Sarah", "John"]})

@input_schema("frame", PandasParameterType(sample))
@output_schema(PandasParameterType(pd.DataFrame({"name": ["Sarah"], "score": [1.5]})))
def run(frame):
    assert isinstance(frame, pd.DataFrame)
    return pd.DataFrame({"name": frame["name"], "score": frame["age"] * frame["height"]})
"""


@unittest.skipUnless(HAVE_PANDAS, "pandas is not installed here (the sandbox test runs this script in the guest)")
class PandasSchema(DoorTest):
    def test_decodes_and_encodes(self):
        self.assertTrue(self.load(PANDAS_SCRIPT))
        got = self.ok_json({"frame": [{"age": 10, "height": 2, "name": "A"}, {"name": "B", "age": 20, "height": 0.5}]})
        self.assertEqual(got, [{"name": "A", "score": 20.0}, {"name": "B", "score": 10.0}])

    def test_the_schema_frame(self):
        self.load(PANDAS_SCRIPT)
        schema = self.host.schemas()[0]
        self.assertEqual(
            schema["input"]["properties"]["frame"],
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["age", "height", "name"],
                    "properties": {
                        "age": {"type": "integer", "format": "int64"},
                        "height": {"type": "number", "format": "double"},
                        "name": {"type": "string"},
                    },
                },
                "format": "pandas.DataFrame:records",
            },
        )
        self.assertEqual(
            schema["input"]["example"],
            {"frame": [{"age": 25, "height": 1.7, "name": "Sarah"}, {"age": 26, "height": 1.8, "name": "John"}]},
        )
        self.assertEqual(schema["output"]["example"], [{"name": "Sarah", "score": 1.5}])

    def test_bad_frames_are_bad_requests(self):
        self.load(PANDAS_SCRIPT)
        e = self.error({"frame": [{"age": 10, "height": 2}]})
        self.assertEqual(e["kind"], "bad_request")
        self.assertIn("parameter 'frame'", e["message"])
        self.assertIn("expected shape (-1, 3)", e["message"])
        self.assertIn("missing columns: name", e["message"])
        e = self.error({"frame": [{"age": "old", "height": 2, "name": "x"}]})
        self.assertEqual(e["kind"], "bad_request")
        self.assertIn("parameter 'frame'", e["message"])
        e = self.error({"frame": 3})
        self.assertIn("parameter 'frame'", e["message"])


if __name__ == "__main__":
    unittest.main()
