"""Parameter types: numpy_parameter_type, pandas_parameter_type, standard_py_parameter_type."""
