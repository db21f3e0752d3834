"""A compatible subset of Microsoft's inference-schema package (``input_schema``, ``output_schema`` and the
numpy, pandas and standard Python parameter types), for Azure ML entry scripts run by Plinth."""
