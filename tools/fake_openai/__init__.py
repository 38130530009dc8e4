"""A fake OpenAI-compatible server for end-to-end tests, the eval harness and benchmarks.

Run it from the repository root::

    python -m tools.fake_openai --port 0 --seed 0 [--latency S] [--jitter S] [--error-rate P]
        [--rate-limit-rate P] [--retry-after S] [--rpm N] [--mode MODE] [--quiet]

It prints one line, ``fake-openai listening on http://HOST:PORT/v1``, and serves
``POST /v1/chat/completions``, the Azure form
``POST /openai/deployments/{deployment}/chat/completions``, ``GET /health`` and
``GET /v1/models`` until SIGTERM or SIGINT. Answers come from coach's rule engine, in the JSON
the LLM engine asks for. See `tools.fake_openai.server` for faults, headers and their order.

Per-request headers: ``X-Fake-Mode`` (normal, invalid-json, refusal, length, content-filter,
bad-quotes, insufficient-quota) and ``X-Fake-Fail-Times: N`` with ``X-Fake-Key: K`` (the first
N requests with key K get 500).
"""
