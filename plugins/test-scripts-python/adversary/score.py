"""A Python entry script that misbehaves on request, so tests can check the host contains it."""
import json
import os


def init():
    global calls
    calls = 0
    # A model holding a `fail-init` file makes init() fail, as a broken deployment would.
    if os.path.exists(os.path.join(os.getenv("AZUREML_MODEL_DIR", "/models"), "fail-init")):
        raise RuntimeError("init failed on purpose")


def recurse(n):
    return recurse(n + 1) + 1


def run(raw_data):
    global calls
    calls += 1
    request = raw_data.strip()
    if request == "loop":
        while True:
            pass
    if request == "alloc":
        hoard = []
        while True:
            hoard.append(bytearray(16 << 20))
    if request == "read-passwd":
        with open("/etc/passwd") as f:
            return f.read()
    if request == "recurse":
        return recurse(0)
    if request == "write":
        with open("/models/evil.txt", "w") as f:
            f.write("x")
        return "written"
    if request == "huge-output":
        return "x" * (100 << 20)
    if request == "raise":
        raise RuntimeError("the adversary failed on purpose")
    if request == "env":
        return dict(os.environ)
    if request == "bad-json":
        return json.loads("{not json")
    return {"calls": calls, "echo": request}
