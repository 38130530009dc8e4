"""The LLM engine for any OpenAI-compatible endpoint."""

from coach.engines.llm.engine import LLMEngine

__all__ = ["LLMEngine"]
