"""Print the OpenAPI document of the API: `python -m coach.api.openapi > openapi.json`.

The committed openapi.json is for integrators; tests/api/test_openapi.py fails when it drifts
from what the code generates.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from coach.api.app import create_app
from coach.settings import Settings

__all__ = ["openapi_document", "render"]


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document; it does not depend on settings."""
    app = create_app(Settings(), configure_logs=False)
    return app.openapi_schema.to_schema()


def render() -> str:
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
