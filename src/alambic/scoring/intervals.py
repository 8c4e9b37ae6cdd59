"""Bootstrap intervals for the shares that eval and safety report."""

from __future__ import annotations

import random
from collections.abc import Sequence

BOOTSTRAP_SAMPLES = 2000


def bootstrap_mean(values: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5th, 97.5th percentile of the mean over resamples of the values); zeros for no values."""
    if not values:
        return 0.0, 0.0, 0.0
    generator = random.Random(seed)
    means = sorted(sum(generator.choices(values, k=len(values))) / len(values) for _ in range(BOOTSTRAP_SAMPLES))
    low, high = means[int(0.025 * BOOTSTRAP_SAMPLES)], means[int(0.975 * BOOTSTRAP_SAMPLES) - 1]
    return sum(values) / len(values), low, high
