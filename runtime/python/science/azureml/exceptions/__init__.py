"""The Azure ML SDK's exception types that Model.get_model_path raises."""


class AzureMLException(Exception):
    """The base of the Azure ML SDK's exceptions."""

    def __init__(self, exception_message="", *args, **kwargs):
        super().__init__(exception_message, *args)
        self.message = exception_message

    def __str__(self):
        return str(self.message)


class UserErrorException(AzureMLException):
    """The caller's mistake."""


class WebserviceException(AzureMLException):
    """A failure of a deployed service's SDK call."""


class ModelNotFoundException(AzureMLException):
    """No model of that name (and version) is in the deployment."""
