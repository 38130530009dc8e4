"""The ASGI entry point for servers: `uvicorn --factory coach.asgi:app`.

A factory (called by the server in each worker), so nothing is built at import time and every
worker reads its settings from the environment itself.
"""

from __future__ import annotations

import os
from typing import Any

from coach.settings import Settings

__all__ = ["app"]


def app() -> Any:
    from coach.api import create_app

    return create_app(Settings.from_env(os.environ))
