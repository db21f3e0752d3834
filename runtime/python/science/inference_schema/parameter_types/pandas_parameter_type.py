"""PandasParameterType: a parameter given as JSON in one of pandas' orients (``records`` by default),
decoded into a DataFrame typed and shaped as the sample (every dimension but the first is enforced)."""
import json
from io import StringIO

import pandas as pd

from ._util import get_swagger_for_list, get_swagger_for_nested_dict
from .abstract_parameter_type import AbstractParameterType

PANDAS_FORMAT = "pandas.DataFrame:{}"
_ORIENTS = ("split", "records", "index", "columns", "values", "table")


def _shape_text(shape):
    return str(tuple([-1] + list(shape[1:])))


class PandasParameterType(AbstractParameterType):
    """A parameter expected as a pandas DataFrame."""

    def __init__(
        self,
        sample_input,
        enforce_column_type=True,
        enforce_shape=True,
        apply_column_names=False,
        orient="records",
    ):
        if not isinstance(sample_input, pd.DataFrame):
            raise Exception("Invalid sample input provided, must provide a sample Pandas Dataframe.")
        super().__init__(sample_input)
        self.enforce_column_type = enforce_column_type
        self.enforce_shape = enforce_shape
        self.apply_column_names = apply_column_names
        if orient not in _ORIENTS:
            raise Exception(
                "Invalid orient provided, must be one of ('split', 'records', 'index', 'columns', 'values', or 'table')"
            )
        self.orient = orient

    def deserialize_input(self, input_data):
        """The DataFrame for ``input_data`` (a list or an object, as parsed from JSON, in this type's orient);
        a DataFrame passes unchanged. Raises ValueError naming the problem."""
        if isinstance(input_data, pd.DataFrame):
            return input_data
        if not isinstance(input_data, (list, dict)):
            raise ValueError(
                f"Invalid input format: expected a data frame in the '{self.orient}' orient, "
                f"got {type(input_data).__name__}"
            )
        try:
            frame = pd.read_json(StringIO(json.dumps(input_data)), orient=self.orient, dtype=False)
        except Exception as e:  # noqa: BLE001 - pandas raises many kinds for malformed input
            raise ValueError(f"Invalid input data frame for the '{self.orient}' orient: {e}") from None

        if self.apply_column_names:
            if len(frame.columns) != len(self.sample_input.columns):
                raise ValueError(
                    f"Invalid input data frame: expected {len(self.sample_input.columns)} columns, "
                    f"got {len(frame.columns)}"
                )
            frame.columns = self.sample_input.columns.copy()

        if self.enforce_column_type:
            sample_types = self.sample_input.dtypes.to_dict()
            types = {column: sample_types.get(column, object) for column in frame.columns}
            try:
                for column, kind in types.items():
                    if str(kind).startswith("timedelta"):
                        frame[column] = pd.to_timedelta(frame[column])
                frame = frame.astype(dtype=types)
            except (ValueError, TypeError, OverflowError) as e:
                raise ValueError(f"Invalid input data frame: {e}") from None

        if self.enforce_shape:
            expected = self.sample_input.shape
            if len(frame.shape) != len(expected) or any(
                frame.shape[d] != expected[d] for d in range(1, len(expected))
            ):
                missing = [str(c) for c in self.sample_input.columns if c not in frame.columns]
                hint = f" (missing columns: {', '.join(missing)})" if missing else ""
                raise ValueError(
                    f"Invalid input data frame: expected shape {_shape_text(expected)}, "
                    f"got {tuple(frame.shape)}{hint}"
                )
        return frame

    def input_to_swagger(self):
        sample = json.loads(self.sample_input.to_json(orient=self.orient, date_format="iso"))
        if self.orient in ("records", "values"):
            schema = get_swagger_for_list(sample)
        else:
            schema = get_swagger_for_nested_dict(sample)

        def mark(properties, column):
            kind = str(self.sample_input.dtypes[column])
            if kind.startswith("datetime"):
                properties[str(column)]["format"] = "date-time"
            elif kind.startswith("timedelta"):
                properties[str(column)]["format"] = "timedelta"

        for column in self.sample_input.columns:
            if self.orient == "records" and "properties" in schema.get("items", {}):
                mark(schema["items"]["properties"], column)
            elif self.orient == "index":
                for row in schema["properties"].values():
                    mark(row["properties"], column)
            elif self.orient == "columns":
                kind = str(self.sample_input.dtypes[column])
                for cell in schema["properties"][str(column)]["properties"].values():
                    if kind.startswith("datetime"):
                        cell["format"] = "date-time"
                    elif kind.startswith("timedelta"):
                        cell["format"] = "timedelta"
            elif self.orient == "table":
                mark(schema["properties"]["data"]["items"]["properties"], column)
        schema["format"] = PANDAS_FORMAT.format(self.orient)
        return schema

    def _plinth_encode(self, value):
        if isinstance(value, pd.DataFrame):
            return json.loads(value.to_json(orient=self.orient, date_format="iso"))
        return value
