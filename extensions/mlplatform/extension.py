"""The jupyter server extension: mlplatform's REST API under /mlplatform/api/ (see openapi.yaml)."""

from jupyter_server.extension.application import ExtensionApp

from .handlers import routes


class MLPlatformExtension(ExtensionApp):
    name = "mlplatform"

    def initialize_handlers(self):
        self.handlers.extend(routes())
