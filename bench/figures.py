"""The one shape every benchmark figure takes."""

from __future__ import annotations

from alambic.results import SafetyResult


def figure(name: str, value: float, unit: str, peer: str, peer_value: float, goal: str) -> dict:
    return {
        "figure": name,
        "value": value,
        "unit": unit,
        "peer": peer,
        "peer_value": peer_value,
        "ratio": value / peer_value,
        "goal": goal,
    }


def retention_figure(name: str, safety: SafetyResult) -> dict:
    """The bare student's refusal rate against its base's, with the retention and its interval as the goal."""
    base = next(row for row in safety.models if row.role == "base")
    low, high = safety.retention_interval
    return figure(
        name,
        safety.bare_refusal,
        "share refused",
        "base",
        base.refusal or 1e-9,
        f"retention {safety.retention:+.3f} [{low:+.3f}, {high:+.3f}] >= -0.05",
    )
