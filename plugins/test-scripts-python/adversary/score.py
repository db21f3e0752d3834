"""A Python entry script that misbehaves on request, so tests can check the host contains it."""
import json
import os


def init():
    global calls
    calls = 0


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
    if request == "raise":
        raise RuntimeError("the adversary failed on purpose")
    if request == "env":
        return dict(os.environ)
    if request == "bad-json":
        return json.loads("{not json")
    return {"calls": calls, "echo": request}
