"""The names newer Azure ML docs import score.py helpers from (``azureml_inference_server_http.api``)."""
