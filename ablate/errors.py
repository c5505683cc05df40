"""One error type for bad user input: a single line naming the field and the allowed values."""

from __future__ import annotations

from typing import Iterable


class ConfigError(ValueError):
    """Raised for invalid configuration; the message is one line, fit to print as-is."""


def choice_error(field: str, value: object, allowed: Iterable[object]) -> ConfigError:
    allowed_s = ", ".join(str(a) for a in sorted(set(map(str, allowed))))
    return ConfigError(f"{field}: unknown value {value!r}; allowed: {allowed_s}")
