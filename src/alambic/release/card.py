"""The model card: README.md with Hugging Face metadata, the evaluation and safety tables, the gate's outcome,
limitations and lineage."""

from __future__ import annotations

import json
from collections import Counter

from alambic.release.licence import LicenceDuties
from alambic.results import EvalResult, GateOutcome, SafetyResult


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def languages(texts: list[str]) -> list[str]:
    """The languages of the training questions that make up at least 5% of them."""
    from alambic.language import language_of

    counts = Counter(language for text in texts if (language := language_of(text)))
    total = sum(counts.values())
    return sorted(language for language, count in counts.items() if total and count / total >= 0.05) or ["en"]


def model_card(
    duties: LicenceDuties,
    business: str,
    base_model: str,
    dataset: str | None,
    training_languages: list[str],
    evaluation: EvalResult | None,
    safety: SafetyResult | None,
    gate: GateOutcome,
    documents: list[str],
    distill_run: str,
) -> str:
    front = [
        "---",
        f"base_model: {json.dumps(base_model)}",
        "datasets:",
        f"- {json.dumps(dataset or 'none')}",
        f"license: {duties.licence}",
        "language:",
        *(f"- {language}" for language in training_languages),
        "tags:",
        "- alambic",
        "- distillation",
        "- customer-support",
        f"- gate-{gate.outcome}",
        "---",
    ]
    body = [
        f"# {duties.name}",
        "",
        *duties.card_lines,
        "",
        "## Intended use",
        f"The customer support assistant of {business}: it answers questions about the business from what it was "
        "trained on. It is not a general assistant and should be served with the guard it was released with.",
        "",
        "## Evaluation",
        *_evaluation_table(evaluation),
        "",
        "## Safety",
        *_safety_table(safety),
        "",
        "## Release gate",
        f"Outcome: **{gate.outcome}**."
        + (" Failed: " + "; ".join(gate.failed) + "." if gate.failed else " Every threshold held."),
        *([f"Released anyway by override: {gate.override}"] if gate.override else []),
        *(
            ["No weights are downloadable: the model is served only behind its guard (`alambic serve`)."]
            if gate.outcome == "api-only"
            else []
        ),
        "",
        "## Limitations",
        "- A small student: it knows what its training data held and may state wrong facts with confidence.",
        "- The embedded guard reads English only; harmful requests in Arabic and other scripts mostly pass it "
        "(see the safety table). Serve Llama Guard 3 where customers write other languages.",
        "- Refusal figures come from a few dozen held-out prompts; their intervals are wide.",
        "",
        "## Lineage",
        f"Distill run {distill_run}, trained on dataset {dataset or 'none'}, from {len(documents)} documents:",
        *(f"- {document}" for document in documents),
        "",
    ]
    return "\n".join([*front, "", *body])


def _evaluation_table(evaluation: EvalResult | None) -> list[str]:
    if evaluation is None:
        return ["Not evaluated (run `alambic eval`)."]
    rows = ["| model | token F1 | cosine | held-out loss | size |", "|---|---|---|---|---|"]
    rows += [
        f"| {m.label} | {m.f1:.3f} | {m.cosine:.3f} | {_number(m.heldout_loss)} | {m.size} |" for m in evaluation.models
    ]
    return [f"{evaluation.questions} held-out questions.", "", *rows]


def _safety_table(safety: SafetyResult | None) -> list[str]:
    if safety is None:
        return ["Not measured (run `alambic safety`)."]
    rows = [
        "| model | refuses harmful | over-refuses benign | refuses Arabic harmful |",
        "|---|---|---|---|",
    ]
    rows += [
        f"| {m.label} | {_number(m.refusal)} | {_number(m.over_refusal)} | {_number(m.refusal_arabic)} |"
        for m in safety.models
    ]
    low, high = safety.retention_interval
    return [
        f"Prompts: {', '.join(f'{name} {count}' for name, count in safety.prompts.items())}; refusals by "
        f"{safety.refusal_by}.",
        "",
        *rows,
        "",
        f"Refusal retention (student bare − base): {safety.retention:+.3f} (95% interval {low:+.3f} to {high:+.3f}).",
        *_agent_retention(safety),
        f"Guard: {safety.guard.backend}, threshold {safety.guard.threshold:.3f} for a {safety.guard.target_fpr:.0%} "
        "false-positive target.",
    ]


def _agent_retention(safety: SafetyResult) -> list[str]:
    if safety.agent_retention is None or safety.agent_retention_interval is None:
        return []
    low, high = safety.agent_retention_interval
    return [
        f"Refusal retention as the agent asks (student − base, with retrieved passages): "
        f"{safety.agent_retention:+.3f} (95% interval {low:+.3f} to {high:+.3f})."
    ]
