"""``aml_request`` (AMLRequest, rawhttp) and ``aml_response`` (AMLResponse), as Azure ML's inference server
provides them to score.py."""
