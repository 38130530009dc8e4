"""Thin route handlers: parse, call the review service, record, return."""

from coach.api.controllers.health import HealthController
from coach.api.controllers.reviews import ReviewController
from coach.api.controllers.rules import RulesController

__all__ = ["HealthController", "ReviewController", "RulesController"]
