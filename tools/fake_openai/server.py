"""A fake OpenAI-compatible chat-completions server for end-to-end tests, evals and benchmarks.

It answers like a model that always agrees with coach's rule engine: the draft is taken from
between the prompt's delimiter lines, reviewed by the rule engine, and returned as the JSON the
LLM engine asks for (`coach.engines.llm.schema.LLMReview`). Faults are injected on demand
(`--mode`, `X-Fake-Mode`, `X-Fake-Fail-Times`) or at random, seeded so that the same seed and
the same sequence of requests give the same faults in any process.

Order of decisions for a chat-completions request (each request gets the next sequence number
`n`, and `rng = random.Random(f"{seed}:{n}")` draws `u = rng.random()` then
`jitter = rng.uniform(0, --jitter)`, always both, in that order):

1. `--rpm`: a sliding 60 s window over accepted requests; a request beyond the limit gets 429.
2. invalid fake headers: 400.
3. mode `insufficient-quota`: 429 `insufficient_quota`.
4. `X-Fake-Fail-Times: N` with `X-Fake-Key: K`: the first N requests with key K get 500.
5. `u < --rate-limit-rate`: 429 with `Retry-After`; else `u < rate-limit-rate + error-rate`: 500.
6. the request body (invalid JSON, no model, `stream`, no draft, ...): 400.
7. the answer, shaped by the mode (normal, invalid-json, refusal, length, content-filter,
   bad-quotes).

Every chat-completions response waits `--latency + jitter` seconds first (in its own thread).
Request bodies and drafts are never logged: the access log has method, path, status, duration.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import signal
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import unquote

from pydantic import ValidationError

from coach.engines.llm.schema import LLMFinding, LLMReview
from coach.logs import configure_logging
from coach.models import MAX_TEXT_CHARS, Context, Kind, Language, Review, ReviewRequest
from coach.service import ReviewService
from tools.fake_openai import (
    ALL_MODES,
    LISTENING_PREFIX,
    MODEL_ID,
    Config,
    loopback_address,
    parse_args,
)

__all__ = [
    "BadRequest",
    "DraftRequest",
    "FakeOpenAI",
    "FakeResponse",
    "bad_quotes",
    "main",
    "make_server",
    "parse_user_message",
    "serve",
    "to_llm_review",
]

REFUSAL = "I can't help with that."
#: OpenAI caches prompt prefixes of at least this many tokens, in steps of `CACHE_STEP`.
CACHE_MIN_TOKENS = 1024
CACHE_STEP = 128
RPM_WINDOW_S = 60.0
MAX_BODY_BYTES = 8 * 1024 * 1024

_OPEN = re.compile(r"^<<<DRAFT ([0-9a-fA-F]{16})>>>\r?$", re.MULTILINE)
_KIND = re.compile(r"^Kind of draft:[ \t]*(\S+)", re.MULTILINE)
_LANGUAGE = re.compile(r"^Language:[ \t]*(\S+)", re.MULTILINE)
_CONTEXT = re.compile(r"^Context \(JSON\):[ \t]*(.*?)\r?$", re.MULTILINE)
_NO_REWRITE = re.compile(r"^Rewrite:[ \t]*no\b", re.MULTILINE | re.IGNORECASE)
_AZURE = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")


class BadRequest(Exception):
    """The request is unusable; the message is safe to return (it never quotes the draft)."""


@dataclass
class FakeResponse:
    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def _error(
    status: int,
    message: str,
    type_: str,
    code: str | None,
    *,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> FakeResponse:
    payload = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return FakeResponse(status, payload, dict(headers or {}))


def _invalid(message: str, code: str | None = None, param: str | None = None) -> FakeResponse:
    return _error(400, message, "invalid_request_error", code, param=param)


def _tokens(chars: int) -> int:
    return math.ceil(chars / 4)


def _text_of(content: object) -> str:
    """A message's text: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _duration(seconds: float) -> str:
    """OpenAI's format for `x-ratelimit-reset-*`: `17ms`, `1.5s`, `6m0s`."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    secs = f"{rest / 1000:g}s"
    return f"{minutes}m{secs}" if minutes else secs


@dataclass(frozen=True)
class DraftRequest:
    draft: str
    kind: Kind
    language: Language | None
    context: Context | None
    rewrite: bool


def parse_user_message(text: str) -> DraftRequest:
    """The draft between the delimiter lines and the labelled lines before it.

    The labelled lines are read only before the opening delimiter, so a draft that contains
    "Kind of draft: template" cannot change them."""
    opening = _OPEN.search(text)
    if opening is None:
        raise BadRequest("no draft found: the user message has no '<<<DRAFT {code}>>>' line")
    nonce = opening.group(1)
    close = re.compile(rf"^<<<END DRAFT {re.escape(nonce)}>>>\r?$", re.MULTILINE)
    closings = list(close.finditer(text, opening.end()))
    if not closings:
        raise BadRequest("no draft found: the draft block has no matching '<<<END DRAFT' line")
    draft = text[opening.end() : closings[-1].start()]
    for newline in ("\r\n", "\n"):
        if draft.startswith(newline):
            draft = draft[len(newline) :]
            break
    for newline in ("\r\n", "\n"):
        if draft.endswith(newline):
            draft = draft[: -len(newline)]
            break
    head = text[: opening.start()]

    kind = Kind.message
    if match := _KIND.search(head):
        try:
            kind = Kind(match.group(1))
        except ValueError:
            raise BadRequest(
                "'Kind of draft' is not one of message, template, meeting_notes"
            ) from None
    language: Language | None = None
    if match := _LANGUAGE.search(head):
        try:
            language = Language(match.group(1))
        except ValueError:
            raise BadRequest("'Language' is not one of en, he") from None
    context: Context | None = None
    if match := _CONTEXT.search(head):
        try:
            raw = json.loads(match.group(1))
        except ValueError:
            raise BadRequest("'Context (JSON)' is not valid JSON") from None
        if raw is not None:
            try:
                context = Context.model_validate(raw)
            except ValidationError as exc:
                fields = sorted({".".join(map(str, e["loc"])) or "context" for e in exc.errors()})
                raise BadRequest(f"'Context (JSON)' is invalid at {', '.join(fields)}") from None
    return DraftRequest(draft, kind, language, context, not _NO_REWRITE.search(head))


def to_llm_review(review: Review, *, rewrite: bool) -> LLMReview:
    """The rule engine's review in the shape the model must answer."""
    return LLMReview.model_validate(
        {
            "rules": [
                {
                    "rule_id": r.rule_id,
                    "verdict": r.verdict.value,
                    "confidence": r.confidence,
                    "reason": r.reason,
                }
                for r in review.rules
            ],
            "findings": [
                {
                    "rule_id": f.rule_id,
                    "quote": f.span.quote,
                    "message": f.message,
                    "suggestion": f.suggestion,
                }
                for f in review.findings
            ],
            "summary": review.summary,
            "suggestions": {
                "questions": list(review.suggestions.questions),
                "offers": list(review.suggestions.offers),
            },
            "rewrite": (
                {
                    "text": review.rewrite.text,
                    "changes": [c.description for c in review.rewrite.changes],
                }
                if rewrite and review.rewrite is not None
                else None
            ),
        }
    )


def _absent(draft: str, index: int) -> str:
    quote = f"(quoted text {index} that is not in the draft)"
    while quote in draft:
        quote += "~"
    return quote


def bad_quotes(review: LLMReview, draft: str) -> LLMReview:
    """Every finding's quote replaced by text that is not in the draft; if there is no finding,
    one is added (for the first failing rule, else the first rule), so that the mode always
    gives the client a quote to reject."""
    findings = [
        f.model_copy(update={"quote": _absent(draft, i)})
        for i, f in enumerate(review.findings, start=1)
    ]
    if not findings and review.rules:
        failing = [r for r in review.rules if r.verdict == "fail"]
        rule = (failing or review.rules)[0]
        findings.append(
            LLMFinding(
                rule_id=rule.rule_id,
                quote=_absent(draft, 1),
                message="This text is not in the draft.",
                suggestion="Quote the draft exactly.",
            )
        )
    return review.model_copy(update={"findings": findings})


class FakeOpenAI:
    """The server's state and answers, without sockets: `handle` maps a request to a response.

    Thread-safe: the handler threads share one instance."""

    def __init__(self, config: Config, service: ReviewService | None = None) -> None:
        self.config = config
        self.service = service or ReviewService()
        self._lock = threading.Lock()
        self._review_lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._seq = 0
        self._window: deque[float] = deque()
        self._fail_counts: dict[str, int] = {}
        self._seen_system: set[str] = set()

    def warm_up(self) -> None:
        """Load the lexicons (one review per language) so the first request is not slower."""
        for text in ("Hi Dana, how is the launch going?", "היי דנה, מה שלומך?"):
            self.service.review_sync(ReviewRequest(text=text), rewrite=True)

    # -- routing -------------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> FakeResponse:
        """`headers` has lower-case names."""
        if method == "POST" and path == "/v1/chat/completions":
            return self.chat(headers, body, deployment=None)
        if method == "POST" and (match := _AZURE.match(path)):
            return self.chat(headers, body, deployment=unquote(match.group(1)))
        if method == "GET" and path == "/health":
            response = FakeResponse(200, {"ok": True})
        elif method == "GET" and path == "/v1/models":
            model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "coach"}
            response = FakeResponse(200, {"object": "list", "data": [model]})
        else:
            response = _error(
                404,
                f"Unknown request URL: {method} {path}. Please check the URL for typos.",
                "invalid_request_error",
                "unknown_url",
            )
        with self._lock:
            response.headers.update(self._rate_headers(time.monotonic()))
        return response

    # -- chat completions ----------------------------------------------------------------------

    def chat(
        self, headers: Mapping[str, str], body: bytes, *, deployment: str | None
    ) -> FakeResponse:
        cfg = self.config
        now = time.monotonic()
        with self._lock:
            self._seq += 1
            n = self._seq
            wait = self._admit(now)
            rate_headers = self._rate_headers(now)
        rng = random.Random(f"{cfg.seed}:{n}")
        draw = rng.random()
        delay = cfg.latency + rng.uniform(0.0, cfg.jitter)
        if wait is not None:
            response = self._rate_limited(
                wait,
                f"Rate limit reached for {MODEL_ID} on requests per min (RPM): "
                f"Limit {cfg.rpm}. Please try again in {math.ceil(wait)}s.",
                minimum=1,
            )
        else:
            response = self._decide(n, draw, headers, body, deployment)
        response.headers.update(rate_headers)
        response.headers["x-request-id"] = f"req_fake_{n}"
        response.delay = delay
        return response

    def _decide(
        self,
        n: int,
        draw: float,
        headers: Mapping[str, str],
        body: bytes,
        deployment: str | None,
    ) -> FakeResponse:
        cfg = self.config
        mode = headers.get("x-fake-mode", cfg.mode).strip().lower()
        if mode not in ALL_MODES:
            return _invalid(f"X-Fake-Mode must be one of {', '.join(ALL_MODES)}")
        fail_times: int | None = None
        if (raw := headers.get("x-fake-fail-times")) is not None:
            try:
                fail_times = int(raw)
            except ValueError:
                fail_times = -1
            if fail_times < 0:
                return _invalid("X-Fake-Fail-Times must be a non-negative integer")
        if mode == "insufficient-quota":
            return _error(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                "insufficient_quota",
            )
        if fail_times is not None:
            key = headers.get("x-fake-key", "")
            with self._lock:
                count = self._fail_counts[key] = self._fail_counts.get(key, 0) + 1
            if count <= fail_times:
                return self._server_error()
        if draw < cfg.rate_limit_rate:
            return self._rate_limited(
                cfg.retry_after,
                f"Rate limit reached for {MODEL_ID}. "
                f"Please try again in {math.ceil(cfg.retry_after)}s.",
            )
        if draw < cfg.rate_limit_rate + cfg.error_rate:
            return self._server_error()
        try:
            return self._complete(n, mode, body, deployment)
        except BadRequest as exc:
            return _invalid(str(exc))

    def _complete(self, n: int, mode: str, body: bytes, deployment: str | None) -> FakeResponse:
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("We could not parse the JSON body of your request.") from None
        if not isinstance(request, dict):
            raise BadRequest("The request body must be a JSON object.")
        model = request.get("model") or deployment
        if not isinstance(model, str) or not model:
            raise BadRequest("You must provide a model parameter.")
        if request.get("stream"):
            raise BadRequest("stream is not supported by the fake server.")
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty array.")
        if not all(isinstance(m, dict) for m in messages):
            raise BadRequest("Every message must be an object.")
        response_format = request.get("response_format")
        if response_format is not None and (
            not isinstance(response_format, dict)
            or response_format.get("type") not in ("text", "json_object", "json_schema")
        ):
            raise BadRequest("response_format.type must be text, json_object or json_schema.")
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise BadRequest("max_tokens must be a positive integer.")

        roles = [str(m.get("role", "")) for m in messages]
        texts = [_text_of(m.get("content")) for m in messages]
        # The last user message with a draft block (a repair call appends messages after it).
        block = next(
            (
                t
                for role, t in reversed(list(zip(roles, texts, strict=True)))
                if role == "user" and _OPEN.search(t)
            ),
            None,
        )
        if block is None:
            raise BadRequest("No draft found: no user message has a '<<<DRAFT {code}>>>' line.")
        parsed = parse_user_message(block)
        try:
            review_request = ReviewRequest(
                text=parsed.draft,
                kind=parsed.kind,
                language=parsed.language,
                context=parsed.context,
            )
        except ValidationError:
            raise BadRequest(
                f"The draft is empty or longer than {MAX_TEXT_CHARS} characters."
            ) from None
        with self._review_lock:
            review = self.service.review_sync(review_request, rewrite=True)
        answer = to_llm_review(review, rewrite=parsed.rewrite)
        if mode == "bad-quotes":
            answer = bad_quotes(answer, parsed.draft)
        full = json.dumps(answer.model_dump(mode="json"), ensure_ascii=False)

        content: str | None = full
        refusal: str | None = None
        finish = "stop"
        if mode == "invalid-json":
            content = full[: len(full) // 2]
        elif mode == "length":
            content = full[: min(len(full) // 2, limit * 4 if limit else len(full))]
            finish = "length"
        elif mode == "refusal":
            content, refusal = None, REFUSAL
        elif mode == "content-filter":
            content, finish = None, "content_filter"
        elif limit is not None and _tokens(len(full)) > limit:
            content, finish = full[: limit * 4], "length"

        system = next(
            (t for role, t in zip(roles, texts, strict=True) if role in ("system", "developer")),
            None,
        )
        prompt_tokens = _tokens(sum(map(len, texts)))
        completion_tokens = _tokens(len(content or refusal or ""))
        message = {"role": "assistant", "content": content, "refusal": refusal}
        return FakeResponse(
            200,
            {
                "id": f"chatcmpl-fake-{n}",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "system_fingerprint": "fp_fake_coach",
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "prompt_tokens_details": {"cached_tokens": self._cached_tokens(system)},
                    "completion_tokens_details": {"reasoning_tokens": 0},
                },
            },
        )

    # -- faults and limits ---------------------------------------------------------------------

    def _cached_tokens(self, system: str | None) -> int:
        """OpenAI-like prompt caching of the system message: a hit needs an identical system
        message seen before and a prefix of at least 1,024 tokens; cached in 128-token steps."""
        if system is None:
            return 0
        key = hashlib.sha256(system.encode("utf-8", "surrogatepass")).hexdigest()
        with self._lock:
            seen = key in self._seen_system
            if len(self._seen_system) >= 10_000:
                self._seen_system.clear()
            self._seen_system.add(key)
        tokens = _tokens(len(system))
        return tokens // CACHE_STEP * CACHE_STEP if seen and tokens >= CACHE_MIN_TOKENS else 0

    def _admit(self, now: float) -> float | None:
        """Under the lock: None if the request fits the RPM window (and is counted), else the
        seconds until a slot frees."""
        rpm = self.config.rpm
        if rpm is None:
            return None
        while self._window and self._window[0] <= now - RPM_WINDOW_S:
            self._window.popleft()
        if len(self._window) >= rpm:
            return self._window[0] + RPM_WINDOW_S - now
        self._window.append(now)
        return None

    def _rate_headers(self, now: float) -> dict[str, str]:
        """Under the lock: the `x-ratelimit-*-requests` headers (only with `--rpm`)."""
        rpm = self.config.rpm
        if rpm is None:
            return {}
        while self._window and self._window[0] <= now - RPM_WINDOW_S:
            self._window.popleft()
        reset = self._window[-1] + RPM_WINDOW_S - now if self._window else 0.0
        return {
            "x-ratelimit-limit-requests": str(rpm),
            "x-ratelimit-remaining-requests": str(max(0, rpm - len(self._window))),
            "x-ratelimit-reset-requests": _duration(reset),
        }

    @staticmethod
    def _rate_limited(seconds: float, message: str, *, minimum: int = 0) -> FakeResponse:
        headers = {
            "retry-after": str(max(minimum, math.ceil(seconds))),
            "retry-after-ms": str(max(minimum * 1000, math.ceil(seconds * 1000))),
        }
        return _error(429, message, "requests", "rate_limit_exceeded", headers=headers)

    @staticmethod
    def _server_error() -> FakeResponse:
        return _error(
            500,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        )

    # -- logging -------------------------------------------------------------------------------

    def log_access(self, method: str, path: str, status: int, started: float) -> None:
        """One line per request: never the body, the draft, a header or the query string."""
        if self.config.quiet:
            return
        ms = (time.perf_counter() - started) * 1000
        with self._log_lock:
            sys.stderr.write(f"fake-openai {method} {path} {status} {ms:.1f}ms\n")
            sys.stderr.flush()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-openai/1"
    sys_version = ""
    server: _Server

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the base class would log request lines; `log_access` logs instead."""

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise BadRequest("Chunked request bodies are not supported; send Content-Length.")
        raw = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(raw)
        except ValueError:
            raise BadRequest("Invalid Content-Length header.") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise BadRequest(f"The request body must be 0 to {MAX_BODY_BYTES} bytes.")
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        started = time.perf_counter()
        app = self.server.app
        path = self.path.split("?", 1)[0]
        try:
            body = self._read_body()
        except BadRequest as exc:
            self.close_connection = True
            response = _invalid(str(exc))
        else:
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                response = app.handle(method, path, headers, body)
            except Exception as exc:  # a bug here must not kill the connection silently
                if not app.config.quiet:
                    sys.stderr.write(f"fake-openai internal error: {exc.__class__.__name__}\n")
                response = FakeOpenAI._server_error()
        if response.delay > 0:
            time.sleep(response.delay)
        app.log_access(method, path, response.status, started)
        data = json.dumps(response.payload, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: FakeOpenAI, family: int) -> None:
        self.address_family = socket.AddressFamily(family)
        self.app = app
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the host up (getfqdn); a loopback name needs none.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    @property
    def base_url(self) -> str:
        host, port = str(self.server_address[0]), int(self.server_address[1])
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"


def make_server(app: FakeOpenAI) -> _Server:
    """Bind (not yet serve) on the configured loopback host and port."""
    resolved = loopback_address(app.config.host)
    if resolved is None:
        raise ValueError(f"refusing non-loopback host {app.config.host!r}")
    host, family = resolved
    return _Server((host, app.config.port), app, family)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and serve until SIGTERM or SIGINT; the exit code."""
    return serve(parse_args(argv))


def serve(config: Config) -> int:
    """Serve until SIGTERM or SIGINT; print the listening line once ready. The exit code."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    configure_logging("WARNING")  # coach's own logs: warnings only, on stderr
    app = FakeOpenAI(config)
    app.warm_up()
    try:
        server = make_server(app)
    except OSError as exc:
        print(
            f"fake-openai: error: cannot listen on {config.host}:{config.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    if stop.is_set():  # asked to stop while starting
        server.server_close()
        return 0
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    print(f"{LISTENING_PREFIX}{server.base_url}", flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
    return 0
