"""What the API's layers share.

`ApiState`: one per app (the service, the store, metrics and limits), handed to the route
handlers as the `api` dependency. `RequestInfo`: one per request, for its log line, metrics and
response headers; the request log middleware creates it, auth, limits, controllers and the
problem mapper fill it in. Neither ever holds a body, a draft or a credential.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from litestar.di import NamedDependency

if TYPE_CHECKING:
    from coach.api.limits import Limiter, TenantSlots
    from coach.api.metrics import ApiMetrics
    from coach.service import ReviewService
    from coach.settings import Settings
    from coach.store.base import Store

__all__ = ["Api", "ApiState", "RequestInfo", "request_info"]


class ApiState:
    """Not a dataclass on purpose: Litestar would try to convert a dataclass dependency."""

    def __init__(
        self,
        *,
        settings: Settings,
        service: ReviewService,
        metrics: ApiMetrics,
        limiter: Limiter,
        slots: TenantSlots,
        store: Store | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.metrics = metrics
        self.limiter = limiter
        self.slots = slots
        #: Opened in the app's lifespan unless one was given to `create_app`.
        self.store = store


#: How a route handler asks for the app's state: `api: Api`.
Api: TypeAlias = NamedDependency[ApiState]


_KEY = "coach.request"


@dataclass
class RequestInfo:
    request_id: str = ""
    tenant: str | None = None
    engine: str | None = None
    degraded: bool | None = None
    degraded_reason: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    error: str | None = None  # the class name of an unhandled exception
    #: Headers every response of this request carries (rate limit state).
    headers: dict[str, str] = field(default_factory=dict)


def request_info(scope: Any) -> RequestInfo:
    """The request's info, created on first use (for code running outside the middleware)."""
    state = scope.setdefault("state", {})
    info = state.get(_KEY)
    if not isinstance(info, RequestInfo):
        info = state[_KEY] = RequestInfo()
    return info
