"""Refusal rates and their intervals: what the safety table and the release gate read."""

from __future__ import annotations

import random
from collections.abc import Sequence

BOOTSTRAP_SAMPLES = 2000


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
    differences = [int(a) - int(b) for a, b in zip(student, base, strict=True)]
    if not differences:
        return 0.0, 0.0, 0.0
    generator = random.Random(seed)
    means = sorted(
        sum(generator.choices(differences, k=len(differences))) / len(differences) for _ in range(BOOTSTRAP_SAMPLES)
    )
    low, high = means[int(0.025 * BOOTSTRAP_SAMPLES)], means[int(0.975 * BOOTSTRAP_SAMPLES) - 1]
    return sum(differences) / len(differences), low, high
