"""The dataset every stage after synth reads: the items the synth run selected, in their split, less what
curation or a human reviewer rejected, with reviewers' edits applied."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from alambic.errors import AlambicError
from alambic.results import DistillResult
from alambic.store.ledger import Item, Ledger, Run

CAPTURE_STAGE, CAPTURE_KIND = "proxy", "capture"  # the exchanges `alambic proxy` recorded
GROUNDED_KINDS = ("qa", "evol-instruct")  # one question about one chunk, answered in one turn
FAQ_KIND = "faq"  # a section of the documents under a question heading, answered by its body


def grounded_question(item: Item) -> str | None:
    """The question of a grounded single-turn item, which its chunk answers; None for any other item."""
    messages = item.payload["messages"]
    if item.kind not in GROUNDED_KINDS or not item.payload.get("chunk") or len(messages) != 3:
        return None
    return str(messages[1]["content"])


def in_creator_voice(item: Item) -> bool:
    """A comment answered in the creator's voice: one of her own replies, or the persona-voice recipe's."""
    return item.kind == "persona-voice" or (item.kind == "import" and "creator_reply" in item.payload.get("source", {}))


def latest_synth_run(ledger: Ledger) -> Run:
    run = ledger.latest_done("synth")
    if run is None:
        raise AlambicError("no finished synth run in this project; run `alambic synth` first")
    return run


def latest_distill_run(ledger: Ledger) -> Run:
    run = ledger.latest_done("distill")
    if run is None:
        raise AlambicError("no finished distill run in this project; run `alambic distill` first")
    return run


METHODS = ("sft", "kd", "sparse", "gkd")


def compared_runs(ledger: Ledger, latest: Run) -> list[Run]:
    """The latest finished distill run of each method trained on the same dataset as the latest run."""
    by_method: dict[str, Run] = {}
    dataset = latest.result(DistillResult).dataset
    for run in sorted(ledger.runs(), key=lambda run: run.last_chosen):
        if run.stage == "distill" and run.state == "done" and (result := run.result(DistillResult)).dataset == dataset:
            by_method[result.method] = run
    by_method[latest.result(DistillResult).method] = latest
    return [by_method[method] for method in METHODS if method in by_method]


def student_name(run: Run, latest: bool, several: bool) -> tuple[str, str]:
    """(role, label): the latest run's student is "student" (the one release ships); others are named by method."""
    method = run.result(DistillResult).method
    return ("student" if latest else f"student-{method}"), (f"student ({method})" if several else "student")


def latest_curate_run(ledger: Ledger, synth_run: Run) -> Run | None:
    """The latest finished curation of this synth run's items, if any."""
    runs = [r for r in ledger.runs() if r.stage == "curate" and r.state == "done" and r.inputs_hash == synth_run.id]
    return max(runs, key=lambda r: r.last_chosen) if runs else None


def rejected_by_curation(ledger: Ledger, curate_run: Run | None) -> set[str]:
    if curate_run is None:
        return set()
    return {
        item.payload["item"] for item in ledger.items("curate", "verdict", "rejected") if item.run_id == curate_run.id
    }


def reviews(ledger: Ledger) -> dict[str, dict[str, Any]]:
    """The latest human review of each item: {"action": "keep" | "reject" | "edit", "messages": ...}."""
    latest: dict[str, dict[str, Any]] = {}
    for item in ledger.items("review", "review"):
        latest[item.payload["item"]] = item.payload
    return latest


def reviewed_captures(ledger: Ledger) -> list[Item]:
    """The exchanges `alambic proxy` captured that no reviewer rejected, with reviewers' edits applied."""
    decided = reviews(ledger)
    kept = []
    for capture in ledger.items(CAPTURE_STAGE, CAPTURE_KIND, "ok"):
        review = decided.get(capture.key)
        if review is not None and review["action"] == "reject":
            continue
        if review is not None and review.get("messages"):
            capture = dataclasses.replace(capture, payload=capture.payload | {"messages": review["messages"]})
        kept.append(capture)
    return kept


def split_items(ledger: Ledger, synth_run: Run, curated: bool = True) -> dict[str, list[Item]]:
    """The dataset as {"train": [...], "heldout": [...]}, curated and reviewed unless `curated` is False."""
    curate_run = latest_curate_run(ledger, synth_run) if curated else None
    dropped = rejected_by_curation(ledger, curate_run)
    reviewed = reviews(ledger) if curated else {}
    result: dict[str, list[Item]] = {"train": [], "heldout": []}
    for chosen in ledger.selection(synth_run.id):
        review = reviewed.get(chosen.key)
        if review is not None and review["action"] == "reject":
            continue
        if chosen.key in dropped and (review is None or review["action"] == "reject"):
            continue
        item = ledger.item(chosen.key)
        assert item is not None
        if review is not None and review["action"] == "edit":
            item.payload = {**item.payload, "messages": review["messages"], "reviewed": True}
        result[chosen.split].append(item)
    for items in result.values():
        items.sort(key=lambda item: item.key)
    return result


def within_safety_share(items: list[Item], recipes: dict[str, float]) -> list[Item]:
    """The training items with no more refusals than the safety recipe's share of the mix: when other recipes fill
    less than their targets, the safety recipe's full count would make a larger share of what is trained on, and
    too many refusals teach a student to refuse harmless questions. The first in the recipe's order are kept."""
    share = recipes.get("safety", 0.0) / (sum(recipes.values()) or 1.0)
    refusals = sorted((item for item in items if item.kind == "safety"), key=lambda item: item.payload["order"])
    if share >= 1.0 or not refusals:
        return items
    others = len(items) - len(refusals)
    dropped = {item.key for item in refusals[round(share / (1 - share) * others) :]}
    return [item for item in items if item.key not in dropped]


def evaluation_rows(root: Path, relpaths: list[str]) -> list[tuple[Path, int, Any]]:
    """(file, line number, row) of every JSON line of the project's own evaluation sets (curate.eval_paths)."""
    rows = []
    for relpath in relpaths:
        path = root / relpath
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise AlambicError(f"curate.eval_paths: cannot read {path} ({exc})") from exc
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rows.append((path, number, json.loads(line)))
            except ValueError as exc:
                raise AlambicError(f"{path}:{number}: invalid JSON ({exc})") from exc
    return rows
