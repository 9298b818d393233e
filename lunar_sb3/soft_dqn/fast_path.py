"""Placeholder: the fast training path (issue #6) is not implemented yet."""

from typing import Any


class FastTrainer:
    @classmethod
    def for_model(cls, model: Any) -> "FastTrainer | None":
        return None


def unsupported_reason(model: Any) -> str:
    return "not implemented"
