"""The curated dataset of a synth run, read back from the ledger and split by source chunk."""

from __future__ import annotations

from alambic.errors import AlambicError
from alambic.store.ledger import Item, Ledger, Run


def latest_synth_run(ledger: Ledger) -> Run:
    run = ledger.latest_done("synth")
    if run is None:
        raise AlambicError("no finished synth run in this project; run `alambic synth` first")
    return run


def split_items(ledger: Ledger, synth_run: Run) -> dict[str, list[Item]]:
    """Accepted question/answer items of a synth run, as {"train": [...], "heldout": [...]}."""
    splits: dict[str, str] = synth_run.summary["splits"]
    result: dict[str, list[Item]] = {"train": [], "heldout": []}
    for item in ledger.items("synth", "qa", "ok"):
        split = splits.get(item.payload["chunk"])
        if split is not None:
            result[split].append(item)
    for items in result.values():
        items.sort(key=lambda item: item.key)
    return result
