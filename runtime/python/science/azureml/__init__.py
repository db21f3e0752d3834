"""The parts of the Azure ML SDK that entry scripts use inside a deployment: ``azureml.core.model.Model``
(``get_model_path``), and ``azureml.contrib.services`` (``AMLRequest``, ``rawhttp``, ``AMLResponse``)."""
