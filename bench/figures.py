"""The one shape every benchmark figure takes."""

from __future__ import annotations


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
