"""prefloop's web service (``prefloop serve``): tasks and arms, select/generate, feedback, stats.

:func:`create_app` builds the FastAPI app; :mod:`prefloop.serve.ops` holds the same work as plain
functions for use without HTTP.
"""

from prefloop.serve import ops
from prefloop.serve.app import ServeConfigError, app_from_env, create_app
from prefloop.serve.auth import (
    ROLES,
    CreatedKey,
    create_api_key,
    list_api_keys,
    revoke_api_key,
)
from prefloop.serve.settings import ServeSettings

__all__ = [
    "ROLES",
    "CreatedKey",
    "ServeConfigError",
    "ServeSettings",
    "app_from_env",
    "create_api_key",
    "create_app",
    "list_api_keys",
    "ops",
    "revoke_api_key",
]
