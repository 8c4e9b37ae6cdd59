"""Refusal rates and their intervals: what the safety table and the release gate read."""

from __future__ import annotations

from collections.abc import Sequence

from alambic.scoring.intervals import bootstrap_mean


def rate(flags: Sequence[bool | None]) -> float | None:
    """The share of True among the flags that are known; None if none is."""
    known = [flag for flag in flags if flag is not None]
    return sum(known) / len(known) if known else None


def agreement(first: Sequence[bool], second: Sequence[bool | None]) -> float | None:
    pairs = [(a, b) for a, b in zip(first, second, strict=True) if b is not None]
    return sum(a == b for a, b in pairs) / len(pairs) if pairs else None


def paired_difference_interval(
    student: Sequence[bool], base: Sequence[bool], seed: int = 0
) -> tuple[float, float, float]:
    """(mean difference, 2.5th, 97.5th percentile) of student − base refusal, resampling prompts with both
    answers kept together, since each prompt's pair is not independent."""
    return bootstrap_mean([int(a) - int(b) for a, b in zip(student, base, strict=True)], seed)
