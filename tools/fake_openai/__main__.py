"""`python -m tools.fake_openai --help` (run from the repository root)."""

from __future__ import annotations

from tools.fake_openai.server import main

raise SystemExit(main())
