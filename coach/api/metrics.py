"""Prometheus metrics of one app, in a registry of its own (never the global one).

Labels are bounded and never carry request data: routes are templates (`/v1/rules/{rule_id}`,
or `unmatched`), never raw paths; no tenant, key or draft appears anywhere.
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from coach.models import Review, Verdict

__all__ = ["CONTENT_TYPE", "UNMATCHED_ROUTE", "ApiMetrics", "reason_code"]

#: The classic text format (Litestar adds "; charset=utf-8").
CONTENT_TYPE = "text/plain; version=0.0.4"
UNMATCHED_ROUTE = "unmatched"

_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)


def reason_code(degraded_reason: str | None) -> str:
    """The stable code that starts a `degraded_reason` ("timeout: …" -> "timeout")."""
    code = (degraded_reason or "").split(":", 1)[0].strip()
    return code if _CODE.match(code) else "other"


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "coach_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "coach_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.reviews = Counter(
            "coach_reviews",
            "Reviews by engine and overall verdict (fail when any rule failed).",
            ["engine", "verdict"],
            registry=r,
        )
        self.rule_verdicts = Counter(
            "coach_rule_verdicts",
            "Rule verdicts by engine, rule and verdict.",
            ["engine", "rule", "verdict"],
            registry=r,
        )
        self.llm_calls = Counter("coach_llm_calls", "Calls made to the LLM.", registry=r)
        self.llm_tokens = Counter(
            "coach_llm_tokens", "LLM tokens by kind (in, out, cached).", ["kind"], registry=r
        )
        self.llm_errors = Counter(
            "coach_llm_errors",
            "LLM reviews that failed, by error code (each fell back to the rule engine).",
            ["code"],
            registry=r,
        )
        self.fallbacks = Counter(
            "coach_fallbacks",
            "Degraded reviews (done by the rule engine instead of the LLM), by reason code.",
            ["reason"],
            registry=r,
        )
        self.cache_hits = Counter(
            "coach_llm_cache_hits", "LLM reviews served from the cache.", registry=r
        )
        self.unhandled = Counter(
            "coach_unhandled_exceptions",
            "Requests that ended in an unexpected exception (500), by exception class.",
            ["exception"],
            registry=r,
        )
        self.streams_cancelled = Counter(
            "coach_stream_cancellations",
            "Streaming reviews whose client left before the LLM review was sent.",
            registry=r,
        )
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._review_children: dict[tuple[str, bool], Counter] = {}
        self._verdict_children: dict[tuple[str, str, Verdict], Counter] = {}

    # `labels()` validates and converts its values and takes a lock on every call, which cost
    # more than the increments; the children it returns are kept here by their label values.
    # The keys are the label values themselves (already bounded: route templates, known
    # methods, rule ids), so these dicts never hold more entries than the registry does.

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_review(self, review: Review) -> None:
        engine = review.engine
        failed = False
        verdicts = self._verdict_children
        for result in review.rules:
            key = (engine, result.rule_id, result.verdict)
            child = verdicts.get(key)
            if child is None:
                child = verdicts[key] = self.rule_verdicts.labels(
                    engine, result.rule_id, result.verdict.value
                )
            child.inc()
            failed = failed or result.verdict is Verdict.failed
        key2 = (engine, failed)
        review_child = self._review_children.get(key2)
        if review_child is None:
            review_child = self._review_children[key2] = self.reviews.labels(
                engine, "fail" if failed else "pass"
            )
        review_child.inc()
        usage = review.usage
        if usage is not None:
            if usage.cache_hit:
                self.cache_hits.inc()
            else:
                self.llm_calls.inc(usage.calls)
                self.llm_tokens.labels("in").inc(usage.tokens_in)
                self.llm_tokens.labels("out").inc(usage.tokens_out)
                self.llm_tokens.labels("cached").inc(usage.tokens_cached)
        if review.degraded:
            code = reason_code(review.degraded_reason)
            self.fallbacks.labels(code).inc()
            if code != "llm_busy":
                self.llm_errors.labels(code).inc()

    def observe_exception(self, name: str) -> None:
        self.unhandled.labels(name if name.isidentifier() else "other").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
