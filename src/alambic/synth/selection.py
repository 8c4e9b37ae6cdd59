"""Which accepted items make the dataset: each recipe's first `target` items in group order, so that a run
redone with more groups (after failures, or a larger target) keeps the items it had and only adds to them."""

from __future__ import annotations

from alambic.results import SynthResult
from alambic.store import Ledger, Selected


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


def dataset_selection(ledger: Ledger, result: SynthResult) -> list[Selected]:
    """Every item the synth run selected, with its split (items of held-out chunks are held out)."""
    selected = []
    for recipe in result.recipes.values():
        rows = recipe_selection(ledger, recipe.kind, recipe.fingerprint, recipe.groups, recipe.target)
        for _, key, chunk in rows:
            selected.append(Selected(key, recipe.kind, result.splits.get(chunk, "train") if chunk else "train"))
    return selected


def record_missing_selections(ledger: Ledger) -> int:
    """Record the selection of every synth run an older alambic finished without one; returns how many."""
    upgraded = 0
    for run in ledger.unrecorded_selections():
        selected = dataset_selection(ledger, run.result(SynthResult)) if run.stage == "synth" else []
        ledger.put_selection(run.id, selected)
        upgraded += run.stage == "synth"
    return upgraded
