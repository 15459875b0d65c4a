"""Parse the sizes, fractions and durations written in suites and on the command line.

Decimal units (kB, MB, GB, TB) are powers of 1000 and binary units (KiB, MiB, GiB, TiB) powers of 1024,
so "100 GB" in a suite means what the seed's notes mean by it and "5 GiB" what the allocator reports.
"""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z%]*)\s*$")


def _split(text: str | float, what: str) -> tuple[float, str]:
    if isinstance(text, bool):
        raise ValueError(f"expected a {what}, got {text!r}")  # noqa: TRY004 - a user's value: one error type
    if isinstance(text, (int, float)):
        return float(text), ""
    match = _NUMBER_UNIT.match(str(text))
    if not match:
        raise ValueError(f"expected a {what}, got {text!r}")
    return float(match.group(1)), match.group(2)


def parse_size(text: str | float) -> int:
    """'100 GB' -> 100_000_000_000, '256 MiB' -> 268435456; a bare number is bytes."""
    value, unit = _split(text, "size such as '64 GiB'")
    if unit.lower() not in _SIZE_UNITS and unit:
        raise ValueError(f"unknown size unit {unit!r} in {text!r} (use B, kB, MB, GB, TB, "
                         "KiB, MiB, GiB, TiB)")
    return int(value * _SIZE_UNITS[unit.lower() or "b"])


def parse_fraction(text: str | float) -> float:
    """'2%' -> 0.02; a bare number is already a fraction."""
    value, unit = _split(text, "fraction such as '2%'")
    if unit not in ("", "%"):
        raise ValueError(f"expected a percentage such as '2%', got {text!r}")
    return value / 100 if unit == "%" else value


def parse_duration(text: str | float) -> float:
    """'90s', '5m', '250ms', '200us' -> seconds; a bare number is seconds."""
    value, unit = _split(text, "duration such as '90s'")
    if unit and unit.lower() not in _DURATION_UNITS:
        raise ValueError(f"unknown duration unit {unit!r} in {text!r} (use us, ms, s, m, h)")
    return value * _DURATION_UNITS[unit.lower() or "s"]


def format_size(n_bytes: float | None) -> str:
    if n_bytes is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n_bytes) >= scale:
            return f"{n_bytes / scale:.2f} {unit}"
    return f"{int(n_bytes)} B"


def parse_quantity(text: str | float, metric: str) -> float:
    """A limit for `metric` in the unit its name implies: '*bytes' -> size, '*_s' ->
    duration, else a number."""
    if metric.endswith("bytes"):
        return float(parse_size(text))
    if metric.endswith("_s"):
        return parse_duration(text)
    value, unit = _split(text, f"number (metric {metric!r} has no unit)")
    if unit:
        raise ValueError(f"metric {metric!r} has no unit, got {text!r}")
    return value


def format_duration(seconds: float | None) -> str:
    """'850 µs', '12.3 ms', '1.43 s', '6 min 27 s'."""
    if seconds is None:
        return "-"
    if abs(seconds) < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if abs(seconds) < 1:
        return f"{seconds * 1e3:.3g} ms"
    if abs(seconds) < 60:
        return f"{seconds:.3g} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"
