"""plinth_science.load / call over the door, for plain, @rawhttp and AMLResponse scripts, and failures."""
import json
import os
import shutil
import tempfile
import unittest

from door import DoorTest


class PlainRun(DoorTest):
    def test_raw_data_is_the_body_as_text(self):
        self.assertTrue(
            self.load(
                """
                import json
                calls = []
                def init():
                    calls.append("init")
                def run(raw_data):
                    calls.append(type(raw_data).__name__)
                    return {"echo": raw_data, "calls": calls}
                """
            )
        )
        self.assertEqual(self.ok_json('{"a": "é"}'), {"echo": '{"a": "é"}', "calls": ["init", "str"]})
        # The interpreter is kept: init ran once.
        self.assertEqual(self.ok_json("x")["calls"], ["init", "str", "str"])
        self.assertEqual(self.host.schemas(), [])
        self.assertEqual(self.host.errors(), [])

    def test_a_returned_str_is_sent_as_a_json_string(self):
        self.load("def run(raw_data):\n    return 'hi'\n")
        _, head, payload = self.call("x")
        self.assertEqual(payload, b'"hi"')

    def test_numpy_values_are_sent_as_lists(self):
        self.load(
            """
            import numpy as np
            def run(raw_data):
                return {"a": np.arange(3), "m": np.float32(1.5), "b": np.bool_(True), "i": np.int64(7)}
            """
        )
        self.assertEqual(self.ok_json("x"), {"a": [0, 1, 2], "m": 1.5, "b": True, "i": 7})

    def test_get_passes_the_query_as_json(self):
        self.load("def run(raw_data):\n    return raw_data\n")
        payload = self.ok_json(method="GET", query="a=1&b=x&b=%5B1%2C2%5D")
        self.assertEqual(json.loads(payload), {"a": 1, "b": ["x", [1, 2]]})

    def test_request_headers_parameter(self):
        self.load("def run(data, request_headers):\n    return request_headers['x-trace']\n")
        self.assertEqual(self.ok_json("{}", headers={"x-trace": "t1"}), "t1")

    def test_a_body_that_is_not_utf8_is_a_bad_request(self):
        self.load("def run(raw_data):\n    return 1\n")
        e = self.error(b"\xff\xfe")
        self.assertEqual(e["kind"], "bad_request")
        self.assertIn("UTF-8", e["message"])

    def test_an_unserialisable_result_is_an_exception(self):
        self.load("def run(raw_data):\n    return object()\n")
        e = self.error("x")
        self.assertEqual(e["kind"], "exception")
        self.assertIn("not JSON serialisable", e["message"])


class Failures(DoorTest):
    def test_an_exception_in_run_names_the_scripts_line(self):
        self.load(
            """
            import json
            def init():
                pass
            def run(raw_data):
                data = json.loads(raw_data)
                return data["data"]
            """
        )
        e = self.error("{}")
        self.assertEqual(e, {"kind": "exception", "message": "KeyError: 'data' (at score.py:6)"})
        e = self.error("not json")
        self.assertEqual(e["kind"], "exception")
        self.assertTrue(e["message"].startswith("JSONDecodeError: Expecting value"), e)
        self.assertTrue(e["message"].endswith("(at score.py:5)"), e)

    def test_a_missing_model_file_lists_what_the_model_folder_holds(self):
        models = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, models)
        os.makedirs(os.path.join(models, "diabetes", "1"))
        for name in ("model.onnx", "scaler.pkl"):
            open(os.path.join(models, "diabetes", "1", name), "w").close()
        os.environ["AZUREML_MODEL_DIR"] = models
        self.addCleanup(os.environ.pop, "AZUREML_MODEL_DIR", None)
        self.load(
            """
            import os
            def run(raw_data):
                return open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "diabetes", "1", "model.pkl")).read()
            """
        )
        message = self.error("x")["message"]
        self.assertTrue(message.startswith("FileNotFoundError: [Errno 2] No such file or directory"), message)
        self.assertTrue(message.endswith(f"(at score.py:3); {models}/diabetes/1 holds: model.onnx, scaler.pkl"), message)

    def test_python_logging_and_warnings_reach_the_service_log_with_their_levels(self):
        self.load(
            """
            import logging, warnings
            logger = logging.getLogger("scorer")
            def init():
                logging.info("loading the model")
                warnings.warn("pickled with scikit-learn 1.3.2, running 1.5.2")
            def run(raw_data):
                logger.warning("odd input")
                logging.error("bad row")
                logging.debug("not shown")
                return 1
            """
        )
        self.call("x")
        logs = [(l["level"], l["message"]) for l in self.host.logs()]
        self.assertIn(("info", "loading the model"), logs)
        self.assertIn(("warn", "scorer: odd input"), logs)
        self.assertIn(("error", "bad row"), logs)
        warned = [m for level, m in logs if level == "warn" and "pickled with scikit-learn" in m]
        self.assertEqual(len(warned), 1, logs)
        self.assertIn("UserWarning", warned[0])
        self.assertFalse(any("not shown" in m for _, m in logs), logs)

    def test_the_innermost_line_of_the_script_not_of_its_helpers(self):
        self.write("def check(x):\n    raise ValueError(f'bad thing {x}')\n", name="helper.py")
        self.load(
            """
            import helper
            def run(raw_data):
                helper.check(1)
            """
        )
        self.assertEqual(self.error("x")["message"], "ValueError: bad thing 1 (at score.py:3)")

    def test_a_failing_init_fails_the_load(self):
        ok = self.load(
            """
            def init():
                raise RuntimeError("model file missing")
            def run(raw_data):
                return 1
            """
        )
        self.assertFalse(ok)
        self.assertEqual(self.host.errors(), [{"kind": "exception", "message": "RuntimeError: model file missing (at score.py:2)"}])
        # A call after a failed load answers with the reason, never runs.
        e = self.error("x")
        self.assertEqual(e["kind"], "exception")
        self.assertIn("not loaded", e["message"])
        self.assertIn("model file missing", e["message"])

    def test_an_import_failure_fails_the_load(self):
        self.assertFalse(self.load("import json\nimport no_such_module_here\ndef run(raw_data):\n    return 1\n"))
        self.assertEqual(
            self.host.errors()[-1]["message"], "ModuleNotFoundError: No module named 'no_such_module_here' (at score.py:2)"
        )

    def test_a_syntax_error_names_its_line(self):
        self.assertFalse(self.load("import json\n\ndef run(raw_data)\n    return 1\n"))
        message = self.host.errors()[-1]["message"]
        self.assertTrue(message.startswith("SyntaxError: "), message)
        self.assertTrue(message.endswith("(at score.py:3)"), message)

    def test_a_script_without_run(self):
        self.assertFalse(self.load("def init():\n    pass\n"))
        self.assertEqual(self.host.errors()[-1]["message"], "score.py does not define a run() function")

    def test_sys_exit_in_run_is_an_exception_not_an_exit(self):
        self.load("import sys\ndef run(raw_data):\n    sys.exit(3)\n")
        self.assertEqual(self.error("x")["message"], "SystemExit: 3 (at score.py:3)")

    def test_plinth_bad_request_is_a_bad_request(self):
        self.load(
            """
            import plinth
            def run(raw_data):
                raise plinth.BadRequest("row 0 has 3 features, the model takes 10")
            """
        )
        self.assertEqual(self.error("x"), {"kind": "bad_request", "message": "row 0 has 3 features, the model takes 10"})

    def test_load_and_call_never_raise_without_a_host(self):
        import sys
        import types

        import plinth_science

        def refuse(frame):
            raise ConnectionRefusedError("no host")

        self.write("def init():\n    raise RuntimeError('x')\ndef run(raw_data):\n    return 1\n")
        module = types.ModuleType("_host")
        module.call = refuse
        sys.modules["_host"] = module
        self.assertFalse(plinth_science.load(self.dir, "score"))
        self.assertFalse(plinth_science.call())


class Responses(DoorTest):
    def test_aml_response_status_and_body(self):
        self.load(
            """
            from azureml.contrib.services.aml_response import AMLResponse
            def run(raw_data):
                if raw_data == "new":
                    return AMLResponse({"id": 7}, 201, json_str=True)
                if raw_data == "text":
                    return AMLResponse("plain words", 200, {"Content-Type": "text/plain", "X-Extra": "1"})
                if raw_data == "none":
                    return AMLResponse(None, 204)
                return AMLResponse("no such thing", 404)
            """
        )
        _, head, body = self.call("new")
        self.assertEqual((head["status"], head["contentType"], json.loads(body)), (201, "application/json", {"id": 7}))
        _, head, body = self.call("missing")
        self.assertEqual((head["status"], head["contentType"], body), (404, "text/html; charset=utf-8", b"no such thing"))
        _, head, body = self.call("text")
        self.assertEqual(head, {"status": 200, "contentType": "text/plain", "headers": {"X-Extra": "1"}})
        self.assertEqual(body, b"plain words")
        _, head, body = self.call("none")
        self.assertEqual((head["status"], body), (204, b"{}"))

    def test_aml_response_with_numpy_json(self):
        self.load(
            """
            import numpy as np
            from azureml_inference_server_http.api.aml_response import AMLResponse
            def run(raw_data):
                return AMLResponse({"p": np.array([1.5, 2.5])}, 200, json_str=True)
            """
        )
        self.assertEqual(self.ok_json("x"), {"p": [1.5, 2.5]})


class RawHttp(DoorTest):
    SCRIPT = """
        from azureml.contrib.services.aml_request import AMLRequest, rawhttp
        from azureml.contrib.services.aml_response import AMLResponse

        def init():
            pass

        @rawhttp
        def run(request):
            assert isinstance(request, AMLRequest)
            if request.method == "GET":
                return {"method": "GET", "path": request.path, "full_path": request.full_path,
                        "n": request.args.get("n", type=int), "tags": request.args.getlist("tag")}
            return {
                "method": request.method,
                "header": request.headers.get("X-Custom"),
                "has": "x-custom" in request.headers,
                "ctype": request.content_type,
                "arg": request.args["a"],
                "body": request.get_data(as_text=True),
                "raw": len(request.data),
                "json": request.get_json(),
                "id": request.request_id,
            }
        """

    def test_run_gets_the_request(self):
        self.load(self.SCRIPT)
        got = self.ok_json(
            {"k": [1, 2]},
            headers={"content-type": "application/json", "x-custom": "yes"},
            query="a=1&a=2&b=",
        )
        self.assertEqual(
            got,
            {
                "method": "POST",
                "header": "yes",
                "has": True,
                "ctype": "application/json",
                "arg": "1",
                "body": '{"k": [1, 2]}',
                "raw": 13,
                "json": {"k": [1, 2]},
                "id": "req-1",
            },
        )
        got = self.ok_json(method="GET", query="n=5&tag=a&tag=b", headers={})
        self.assertEqual(
            got,
            {"method": "GET", "path": "/api/v1/service/x/score", "full_path": "/api/v1/service/x/score?n=5&tag=a&tag=b",
             "n": 5, "tags": ["a", "b"]},
        )

    def test_get_json_of_a_non_json_body_is_a_bad_request(self):
        self.load(self.SCRIPT)
        e = self.error(b"{nope", headers={"content-type": "application/json", "x-custom": "1"}, query="a=1")
        self.assertEqual(e["kind"], "bad_request")
        self.assertIn("JSON", e["message"])

    def test_rawhttp_below_other_decorators_and_with_output_schema(self):
        self.load(
            """
            import functools
            import numpy as np
            from azureml.contrib.services.aml_request import rawhttp
            from inference_schema.schema_decorators import output_schema
            from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType

            def logged(f):
                @functools.wraps(f)
                def inner(*a, **k):
                    return f(*a, **k)
                return inner

            @output_schema(NumpyParameterType(np.array([1.0])))
            @logged
            @rawhttp
            def run(request):
                return np.array([float(len(request.data))])
            """
        )
        self.assertEqual(self.ok_json("abcd"), [4.0])
        self.assertEqual(self.host.schemas()[0]["input"], None)
        self.assertEqual(self.host.schemas()[0]["output"]["format"], "numpy.ndarray")

    def test_rawhttp_with_input_schema_fails_the_load(self):
        ok = self.load(
            """
            from azureml.contrib.services.aml_request import rawhttp
            from inference_schema.schema_decorators import input_schema
            from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType

            @rawhttp
            @input_schema("request", StandardPythonParameterType(1))
            def run(request):
                return 1
            """
        )
        self.assertFalse(ok)
        self.assertIn("both @rawhttp and @input_schema", self.host.errors()[-1]["message"])

    def test_the_raw_flag_does_not_leak_into_the_next_script(self):
        self.load(self.SCRIPT)
        self.load("def run(raw_data):\n    return raw_data\n")
        self.assertEqual(self.ok_json("plain"), "plain")


if __name__ == "__main__":
    unittest.main()
