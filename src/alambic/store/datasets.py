"""The dataset of a synth run, read back from the ledger: each recipe's selected items, split by source
chunk, less what curation or a human reviewer rejected, with reviewers' edits applied."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from alambic.errors import AlambicError
from alambic.store.ledger import Item, Ledger, Run


@dataclass(frozen=True)
class Selected:
    key: str
    kind: str
    split: str


def latest_synth_run(ledger: Ledger) -> Run:
    run = ledger.latest_done("synth")
    if run is None:
        raise AlambicError("no finished synth run in this project; run `alambic synth` first")
    return run


def recipe_selection(ledger: Ledger, kind: str, fingerprint: str, groups: int, target: int) -> list[tuple]:
    """(order, key, chunk) of the first `target` accepted items of a recipe, in group order.

    Only keys and small fields are held, so this stays small however large the items are.
    """
    chosen = []
    for item in ledger.items("synth", kind, "ok"):
        payload = item.payload
        if payload.get("fingerprint") != fingerprint:
            continue
        if payload["order"][0] < groups:
            chosen.append((tuple(payload["order"]), item.key, payload.get("chunk")))
    chosen.sort()
    return chosen[:target]


def selection(ledger: Ledger, synth_run: Run) -> Iterator[Selected]:
    """Every item the synth run selected, with its split (items of held-out chunks are held out)."""
    splits: dict[str, str] = synth_run.summary["splits"]
    for recipe in synth_run.summary["recipes"].values():
        rows = recipe_selection(ledger, recipe["kind"], recipe["fingerprint"], recipe["groups"], recipe["target"])
        for _, key, chunk in rows:
            yield Selected(key, recipe["kind"], splits.get(chunk, "train") if chunk else "train")


def latest_curate_run(ledger: Ledger, synth_run: Run) -> Run | None:
    """The latest finished curation of this synth run's items, if any."""
    runs = [r for r in ledger.runs() if r.stage == "curate" and r.state == "done" and r.inputs_hash == synth_run.id]
    return max(runs, key=lambda r: r.finished_or_started) if runs else None


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


def split_items(ledger: Ledger, synth_run: Run, curated: bool = True) -> dict[str, list[Item]]:
    """The dataset as {"train": [...], "heldout": [...]}, curated and reviewed unless `curated` is False."""
    curate_run = latest_curate_run(ledger, synth_run) if curated else None
    dropped = rejected_by_curation(ledger, curate_run)
    reviewed = reviews(ledger) if curated else {}
    result: dict[str, list[Item]] = {"train": [], "heldout": []}
    for chosen in selection(ledger, synth_run):
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
