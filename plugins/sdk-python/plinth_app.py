"""The component's entry point: adapts an Azure ML style score.py (init(), run(raw_data)) to the
plinth:scoring world. componentize-py builds it with the folder holding score.py on its path."""
import json
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
        except (plinth.BadRequest, ValueError, KeyError, TypeError) as e:
            # Bad JSON, a missing field, a wrong type: the request is at fault.
            raise Err(_t.Error_InvalidInput(_describe(e)))
        except BaseException as e:  # noqa: BLE001
            raise Err(_t.Error_Internal(_describe(e)))
        # As the Azure ML inference server does, the return value is sent as JSON.
        try:
            return json.dumps(result)
        except (TypeError, ValueError) as e:
            raise Err(_t.Error_Internal(f"run() returned a value that is not JSON serialisable: {e}"))


def _describe(e):
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
    return f"{type(e).__name__}: {e}{where}"
