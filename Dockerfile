# syntax=docker/dockerfile:1
# Multi-stage: build a wheel with its dependencies in a builder, install into a slim runtime that
# runs as a non-root user. The prompts/ folder ships beside the package (COACH_PROMPTS_DIR).

FROM python:3.11-slim AS builder
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY coach ./coach
RUN python -m venv /opt/coach \
 && /opt/coach/bin/pip install --upgrade pip \
 && /opt/coach/bin/pip install .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/coach/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    COACH_HOST=0.0.0.0 \
    COACH_PORT=8000 \
    COACH_DATA_DIR=/data \
    COACH_PROMPTS_DIR=/app/prompts
RUN groupadd --system coach && useradd --system --gid coach --home /app coach \
 && mkdir -p /data /app && chown coach:coach /data
COPY --from=builder /opt/coach /opt/coach
COPY prompts /app/prompts
COPY examples /app/examples
WORKDIR /app
USER coach
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"COACH_PORT\", \"8000\")}/healthz', timeout=2)" || exit 1
STOPSIGNAL SIGTERM
CMD ["coach", "serve"]
