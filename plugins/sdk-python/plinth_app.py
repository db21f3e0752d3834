"""The component's entry point: adapts an Azure ML style score.py (init(), run(raw_data)) to the
plinth:scoring world. componentize-py builds it with the folder holding score.py on its path."""
import json
import os
import traceback

import wit_world
from componentize_py_types import Err
from wit_world.imports import types as _t

import plinth
import score


class WitWorld(wit_world.WitWorld):
    def init(self) -> None:
        init = getattr(score, "init", None)
        if init is None:
            return
        try:
            init()
        except BaseException as e:  # noqa: BLE001 - every failure becomes a clear init error
            raise Err(_describe(e))

    def run(self, raw_data: str) -> str:
        try:
            result = score.run(raw_data)
        except plinth.BadRequest as e:
            # The script says the request is at fault (or the host's own checks did, inside plinth.infer).
            raise Err(_t.Error_InvalidInput(str(e)))
        except BaseException as e:  # noqa: BLE001
            # Anything else escaping run() is the script's failure, as in Azure ML: a 500 with the exception
            # and where it was raised, counted in error rates (and automatic rollback).
            raise Err(_t.Error_Internal(_describe(e)))
        # As the Azure ML inference server does, the return value is sent as JSON.
        try:
            return json.dumps(result)
        except (TypeError, ValueError) as e:
            raise Err(_t.Error_Internal(f"run() returned a value that is not JSON serialisable: {e}"))


def _describe(e):
    """The exception and where the script raised it: its own innermost line, not the library's."""
    frames = traceback.extract_tb(e.__traceback__)
    mine = [f for f in frames if f.filename == getattr(score, "__file__", None)]
    frame = (mine or frames or [None])[-1]
    where = f" (at {os.path.basename(frame.filename)}:{frame.lineno})" if frame else ""
    return f"{type(e).__name__}: {e}{where}"
