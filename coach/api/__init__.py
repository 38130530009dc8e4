"""The HTTP API (Litestar). The only package of coach that imports Litestar."""

from coach.api.app import create_app

__all__ = ["create_app"]
