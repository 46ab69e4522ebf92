"""Decimal money. Never floats: wire values are decimal strings, inside they are `Decimal`."""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_EVEN, Decimal, InvalidOperation

ZERO = Decimal(0)

# Plain decimal notation only: no exponent, no NaN/Infinity, no sign other than a leading '-'.
# ASCII digits only: `\d` alone also matches other scripts' digits ("１００"), which Decimal reads.
_DECIMAL_RE = re.compile(r"^-?(\d{1,30})(\.\d{1,18})?$", re.ASCII)
MAX_INTEGER_DIGITS = 30
MAX_FRACTION_DIGITS = 18


class BadDecimal(ValueError):
    """A string that is not a plain, finite decimal number."""


def parse_decimal(text: str, field: str = "value") -> Decimal:
    """Parse a wire decimal string. Rejects empty, padded, NaN, infinities, exponents, over-long input."""
    if not isinstance(text, str):
        raise BadDecimal(f"{field} must be a decimal string")
    if not text:
        raise BadDecimal(f"{field} is required")
    if not _DECIMAL_RE.fullmatch(text):
        raise BadDecimal(
            f"{field} must be a plain decimal number with at most {MAX_INTEGER_DIGITS} integer and "
            f"{MAX_FRACTION_DIGITS} fraction digits, got {text[:40]!r}"
        )
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid decimals
        raise BadDecimal(f"{field} is not a decimal: {text[:40]!r}") from exc


def parse_positive(text: str, field: str) -> Decimal:
    value = parse_decimal(text, field)
    if value <= 0:
        raise BadDecimal(f"{field} must be greater than 0, got {text}")
    return value


def fmt(value: Decimal) -> str:
    """Decimal to a plain wire string (no exponent, no trailing zeros)."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    """Largest multiple of `step` that is <= value (for value >= 0)."""
    if step <= 0:
        return value
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def ceil_to_step(value: Decimal, step: Decimal) -> Decimal:
    """Smallest multiple of `step` that is >= value (for value >= 0)."""
    if step <= 0:
        return value
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step


def quantize_derived(value: Decimal) -> Decimal:
    """Derived figures (average prices, ratios of money) are kept to 12 places, half-even."""
    return value.quantize(Decimal("1e-12"), rounding=ROUND_HALF_EVEN)
