"""jupyterhub-idle-culler's config file (its `--config`): each server's idle timeout is its profile's.

The hub starts the culler with this file and the table profile → seconds in its environment
(hub_config/culling.py says what is enforced where).
"""

import os

from hub_config.culling import arbiter_from_environment

c = get_config()  # noqa: F821 (provided by traitlets when it loads the file)
c.IdleCuller.cull_arbiter_hook = arbiter_from_environment(os.environ)
