"""One error type for bad user input: a single line naming the field and the allowed values."""

from __future__ import annotations

from typing import Iterable


class ConfigError(ValueError):
    """Raised for invalid configuration; the message is one line, fit to print as-is."""


def choice_text(value: object, allowed: Iterable[object]) -> str:
    """'unknown value 'x'; allowed: a, b' (the part of a choice error after the field)."""
    allowed_s = ", ".join(str(a) for a in sorted(set(map(str, allowed))))
    return f"unknown value {value!r}; allowed: {allowed_s}"


def choice_error(field: str, value: object, allowed: Iterable[object]) -> ConfigError:
    return ConfigError(f"{field}: {choice_text(value, allowed)}")
