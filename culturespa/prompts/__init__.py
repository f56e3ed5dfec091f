"""Prompt construction from the templates in ``conf/templates``: one place renders every chat culturespa sends."""

from culturespa.prompts.builder import PromptBuilder, PromptStyle

__all__ = ["PromptBuilder", "PromptStyle"]
