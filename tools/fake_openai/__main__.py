"""`python -m tools.fake_openai --help` (run from the repository root)."""

from __future__ import annotations

from tools.fake_openai import parse_args


def _run() -> int:
    config = parse_args()  # a bad command line fails here, before coach is imported
    from tools.fake_openai.server import serve

    return serve(config)


raise SystemExit(_run())
