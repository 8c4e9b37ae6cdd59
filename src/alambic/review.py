"""Human review: export the dataset (jsonl, parquet or csv), edit or reject rows, import them back by id."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alambic.dataset import CAPTURE_KIND, CAPTURE_STAGE, latest_curate_run, latest_synth_run, reviews
from alambic.errors import AlambicError
from alambic.hashing import stable_hash
from alambic.store import Item, Ledger

FORMATS = ("jsonl", "parquet", "csv")
COLUMNS = ("id", "recipe", "split", "status", "reason", "question", "answer", "messages")


def dataset_rows(ledger: Ledger, include_rejected: bool = True) -> Iterator[dict[str, Any]]:
    """One row per selected item of the latest synth run, with its curation verdict and any review applied."""
    synth_run = latest_synth_run(ledger)
    curate_run = latest_curate_run(ledger, synth_run)
    verdicts: dict[str, str] = {}
    if curate_run is not None:
        for verdict in ledger.items("curate", "verdict", "rejected"):
            if verdict.run_id == curate_run.id:
                verdicts[verdict.payload["item"]] = verdict.reason or "rejected"
    reviewed = reviews(ledger)
    for chosen in ledger.selection(synth_run.id):
        item = ledger.item(chosen.key)
        assert item is not None
        messages = item.payload["messages"]
        status, reason = ("rejected", verdicts[chosen.key]) if chosen.key in verdicts else ("ok", "")
        review = reviewed.get(chosen.key)
        if review is not None:
            status, reason = ("rejected", "human_review") if review["action"] == "reject" else ("ok", "")
            messages = review.get("messages") or messages
        if status == "rejected" and not include_rejected:
            continue
        yield {
            "id": chosen.key,
            "recipe": item.payload.get("recipe", chosen.kind),
            "split": chosen.split,
            "status": status,
            "reason": reason,
            "question": next((m["content"] for m in messages if m["role"] == "user"), ""),
            "answer": next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), ""),
            "messages": messages,
        }


def captured_rows(ledger: Ledger) -> Iterator[dict[str, Any]]:
    """One row per exchange `alambic proxy` captured, with any review applied: a rejected one is left out of
    what `synth.captured` imports, an edited one goes in edited."""
    reviewed = reviews(ledger)
    for item in ledger.items(CAPTURE_STAGE, CAPTURE_KIND, "ok"):
        messages = item.payload["messages"]
        review = reviewed.get(item.key)
        status, reason = ("rejected", "human_review") if review and review["action"] == "reject" else ("ok", "")
        if review is not None and review.get("messages"):
            messages = review["messages"]
        yield {
            "id": item.key,
            "recipe": "captured",
            "split": "",
            "status": status,
            "reason": reason,
            "question": next((m["content"] for m in reversed(messages) if m["role"] == "user"), ""),
            "answer": next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), ""),
            "messages": messages,
        }


def reviewable_rows(ledger: Ledger) -> list[dict[str, Any]]:
    """The latest dataset (if there is one) and the captured traffic: every row a reviewer may decide on."""
    try:
        rows = list(dataset_rows(ledger))
    except AlambicError:  # no synth run yet
        rows = []
    return rows + list(captured_rows(ledger))


def export(ledger: Ledger, path: Path, fmt: str, include_rejected: bool = True) -> int:
    if fmt not in FORMATS:
        raise AlambicError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    rows = list(dataset_rows(ledger, include_rejected))
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "messages": json.dumps(row["messages"], ensure_ascii=False)})
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        message = pa.struct([("role", pa.string()), ("content", pa.string())])
        schema = pa.schema([*((name, pa.string()) for name in COLUMNS[:-1]), ("messages", pa.list_(message))])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return len(rows)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of an exported file a reviewer edited, in any of the export formats."""
    if not path.is_file():
        raise AlambicError(f"{path}: does not exist")
    suffix = path.suffix.lower().lstrip(".")
    try:
        if suffix == "jsonl":
            rows = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as exc:
                        raise AlambicError(f"{path}:{number}: invalid JSON ({exc.msg})") from exc
            return rows
        if suffix == "csv":
            with path.open(encoding="utf-8", newline="") as handle:
                rows = list(csv.DictReader(handle))
            for number, row in enumerate(rows, start=2):
                try:
                    row["messages"] = json.loads(row["messages"]) if row.get("messages") else None
                except ValueError as exc:
                    raise AlambicError(f"{path}:{number}: the messages column is not JSON ({exc.msg})") from exc
            return rows
        if suffix == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
    except UnicodeDecodeError as exc:
        raise AlambicError(f"{path}: not UTF-8 text") from exc
    raise AlambicError(f"{path}: unknown format; use .jsonl, .parquet or .csv")


def import_reviews(ledger: Ledger, path: Path) -> dict[str, int]:
    """Record each changed row of a reviewed file as a review (keep, reject or edit)."""
    return record_reviews(ledger, read_rows(path), str(path))


def record_reviews(ledger: Ledger, rows: list[dict[str, Any]], source: str) -> dict[str, int]:
    """Record each changed row as a review, the reviewer's latest decision winning. Checks every row before
    writing any; `source` names where the rows came from in errors."""
    current = {row["id"]: row for row in reviewable_rows(ledger)}
    previous = {item.payload["item"]: item.key for item in ledger.items("review", "review")}
    batch, counts, seen = [], {"reject": 0, "edit": 0, "keep": 0, "unchanged": 0}, {}
    for number, row in enumerate(rows, start=1):
        where = f"{source}: row {number}"
        if row.get("id") in seen:
            raise AlambicError(f"{where}: id {row['id']!r} is also on row {seen[row['id']]}; keep one row per item")
        seen[row.get("id")] = number
        review = _review_of(row, current, where)
        if review is None:
            counts["unchanged"] += 1
            continue
        counts[review["action"]] += 1
        # Keyed by the decision it follows too: the same decision taken again after another is a new review.
        key = stable_hash("review", review, previous.get(review["item"]))
        batch.append((Item(key, "review", "review", "review", "ok", review), [review["item"]]))
    ledger.put_items(batch)
    return counts


def _review_of(row: dict[str, Any], current: dict[str, dict[str, Any]], where: str) -> dict[str, Any] | None:
    item_id = row.get("id")
    if item_id not in current:
        raise AlambicError(f"{where}: id {item_id!r} is not an item of the latest synth run or a captured exchange")
    before = current[item_id]
    status = (row.get("status") or before["status"]).strip().lower()
    if status not in ("ok", "rejected"):
        raise AlambicError(f"{where}: status must be ok or rejected, not {status!r}")
    if status == "rejected":
        return None if before["status"] == "rejected" else {"item": item_id, "action": "reject"}
    messages = _edited_messages(row, before, where)
    if messages != before["messages"]:
        return {"item": item_id, "action": "edit", "messages": messages}
    return {"item": item_id, "action": "keep"} if before["status"] == "rejected" else None


def _edited_messages(row: dict[str, Any], before: dict[str, Any], where: str) -> list[dict[str, str]]:
    """The row's messages; an edited question or answer column (single-turn items) wins over them."""
    messages = row.get("messages") or before["messages"]
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "content" in m for m in messages):
        raise AlambicError(f"{where}: messages must be a list of {{role, content}}")
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if len(users) == 1 and row.get("question") not in (None, before["question"]):
        messages[users[0]]["content"] = row["question"]
    if len(answers) == 1 and row.get("answer") not in (None, before["answer"]):
        messages[answers[0]]["content"] = row["answer"]
    return messages
