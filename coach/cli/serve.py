"""`coach serve`: the HTTP API under uvicorn (production ASGI server).

Graceful shutdown is uvicorn's: on SIGTERM it stops accepting, finishes in-flight requests
(up to --graceful-timeout seconds) and runs the app's shutdown hooks.
"""

from __future__ import annotations

import os

import click

from coach.settings import Settings

__all__ = ["serve"]


@click.command()
@click.option("--host", help="Interface to bind (COACH_HOST; default 127.0.0.1).")
@click.option("--port", type=int, help="Port (COACH_PORT; default 8000).")
@click.option("--workers", type=int, help="Worker processes (COACH_WORKERS; default 1).")
@click.option(
    "--graceful-timeout",
    type=int,
    default=20,
    show_default=True,
    help="Seconds to finish in-flight requests on shutdown.",
)
def serve(host: str | None, port: int | None, workers: int | None, graceful_timeout: int) -> None:
    """Run the HTTP API."""
    import uvicorn

    settings = Settings.from_env(os.environ)
    uvicorn.run(
        "coach.asgi:app",
        factory=True,
        host=host or settings.host,
        port=settings.port if port is None else port,
        workers=workers or settings.workers,
        timeout_graceful_shutdown=graceful_timeout,
        log_level=settings.log_level.lower(),
        access_log=False,  # coach logs each request itself, without bodies
        proxy_headers=False,  # never trust client-supplied forwarding headers
        server_header=False,
    )
