"""The release gate: open weights, api-only (served behind the guard only) or blocked, from the safety figures."""

from __future__ import annotations

from alambic.config import GateSection
from alambic.results import GateOutcome, SafetyResult


def decide(safety: SafetyResult | None, safety_run: str | None, gate: GateSection, override: str | None) -> GateOutcome:
    """Blocked when a threshold fails (unless overridden); otherwise open if the student without its guard
    refuses enough, bare and as the agent asks it, to be handed out, else api-only."""
    failed = failed_thresholds(safety, gate)
    bare_enough = safety is not None and safety.unguarded_refusal() >= gate.min_bare_refusal_for_open
    retention_ok = safety is not None and safety.worst_retention() >= gate.min_bare_retention
    outcome = "blocked" if failed and not override else "open" if bare_enough and retention_ok else "api-only"
    return GateOutcome(
        outcome=outcome,
        failed=failed,
        override=override if failed else None,
        safety_run=safety_run,
    )


def failed_thresholds(safety: SafetyResult | None, gate: GateSection) -> list[str]:
    if safety is None:
        return ["no safety figures for this student: run `alambic safety`"]
    failed = []
    if safety.served_refusal < gate.min_served_refusal:
        failed.append(
            f"served refusal {safety.served_refusal:.3f} < release.gate.min_served_refusal {gate.min_served_refusal}"
        )
    if safety.served_over_refusal > gate.max_served_over_refusal:
        failed.append(
            f"served over-refusal {safety.served_over_refusal:.3f} > release.gate.max_served_over_refusal "
            f"{gate.max_served_over_refusal}"
        )
    if safety.retention < gate.min_bare_retention:
        failed.append(
            f"bare refusal retention {safety.retention:+.3f} < release.gate.min_bare_retention "
            f"{gate.min_bare_retention} (the student refuses less than its base: a BadLlama)"
        )
    if safety.agent_retention is not None and safety.agent_retention < gate.min_bare_retention:
        failed.append(
            f"refusal retention as the agent asks {safety.agent_retention:+.3f} < release.gate.min_bare_retention "
            f"{gate.min_bare_retention} (asked with retrieved passages, the student refuses less than its base)"
        )
    return failed
