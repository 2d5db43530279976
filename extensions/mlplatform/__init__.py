"""mlplatform: the notebook side of the platform.

Reads the environment contract the hub hands every notebook server (`mlplatform.environment`).
The golden paths (serving, Spark jobs, model promotion), their REST API and widgets live here too.
"""

from .environment import PlatformEnvironment, current

__all__ = ["PlatformEnvironment", "current"]
__version__ = "0.1.0"


def _jupyter_server_extension_points():
    from .extension import MLPlatformExtension

    return [{"module": "mlplatform", "app": MLPlatformExtension}]
