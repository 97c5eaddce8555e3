"""Generic checks of settings, shared by datasets, training, strategies and the suite parser."""

from __future__ import annotations


def check_range(name: str, value, low, high, low_open: bool = False, high_open: bool = False) -> None:
    """Raises ValueError("name: ...") when value is outside [low, high] (ends open as asked)."""
    too_low = value is not None and low is not None and (value <= low if low_open else value < low)
    too_high = value is not None and high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        low_end = f"{'(' if low_open else '['}{low if low is not None else '-inf'}"
        high_end = f"{high if high is not None else 'inf'}{')' if high_open else ']'}"
        interval = f"{low_end}, {high_end}"
        raise ValueError(f"{name}: {value} is outside {interval}")
