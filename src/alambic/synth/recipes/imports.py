"""Real traffic: conversation logs (OpenAI-format JSONL, or question,answer CSV) imported as items."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alambic.errors import AlambicError
from alambic.hashing import stable_hash
from alambic.models import Message
from alambic.store import Item, Ledger
from alambic.synth.engine import STAGE

KIND = "import"


def read_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, row) of a .jsonl (parsed JSON, or the error text) or a .csv (a dict) file."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            if path.suffix.lower() == ".csv":
                reader = csv.DictReader(handle)
                missing = {"question", "answer"} - set(reader.fieldnames or [])
                if missing:
                    raise AlambicError(f"{path}: CSV needs the columns question and answer (missing {sorted(missing)})")
                for row in reader:
                    yield reader.line_num, row
                return
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield number, json.loads(line)
                    except ValueError as exc:
                        yield number, f"invalid JSON ({exc.msg})"
    except FileNotFoundError as exc:
        raise AlambicError(f"synth.import_paths: {path} does not exist") from exc
    except UnicodeDecodeError as exc:
        raise AlambicError(f"{path}: not UTF-8 text") from exc


def row_messages(row: Any, system_prompt: str) -> tuple[list[Message], str | None]:
    """The row as OpenAI chat messages, and why it cannot be used (or None)."""
    if isinstance(row, str):
        return [], row
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages
        ):
            return [], "messages must be a list of {role, content}"
        messages = [{"role": str(m.get("role")), "content": m["content"]} for m in messages]
    elif row.get("question") and row.get("answer"):
        messages = [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]
    else:
        return [], "needs messages, or question and answer"
    if messages and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    roles = [m["role"] for m in messages[1:]]
    if len(roles) < 2 or roles != ["user", "assistant"] * (len(roles) // 2):
        return messages, "turns must alternate user/assistant and end with the assistant"
    if not all(m["content"].strip() for m in messages[1:]):
        return messages, "empty turn"
    return messages, None


def import_logs(
    ledger: Ledger,
    run_id: str,
    root: Path,
    paths: list[str],
    digests: list[str],
    system_prompt: str,
    captures: list[Item],
    creator_replies: list[list[Message]],
) -> tuple[dict[str, int], str]:
    """Store every row of every log, then every captured exchange, then the creator's own replies, as items (ok or
    rejected with its reason), a file per transaction.

    Returns counts by status and the fingerprint of these inputs, which marks their items.
    """
    captured = [[c.key, c.payload["messages"]] for c in captures]  # a reviewer's edit makes new items
    extra = [*([captured] if captures else []), *([creator_replies] if creator_replies else [])]
    fingerprint = stable_hash(KIND, paths, digests, *extra)[:16]
    counts = {"ok": 0, "rejected": 0}
    for file_index, (relpath, digest) in enumerate(zip(paths, digests, strict=True)):
        path = (root / relpath).expanduser()
        source_key = stable_hash("import-file", relpath, digest)
        batch: list[tuple[Item, list[str]]] = [
            (Item(source_key, "-", STAGE, "import-file", "ok", {"path": relpath, "sha256": digest}), [])
        ]
        for number, row in read_rows(path):
            messages, reason = row_messages(row, system_prompt)
            payload = {
                "recipe": KIND,
                "fingerprint": fingerprint,
                "order": [file_index, number],
                "source": {"file": relpath, "line": number, "sha256": digest},
                "id": row.get("id") if isinstance(row, dict) else None,
                "messages": messages,
                "question": messages[1]["content"] if len(messages) > 1 else "",
                "answer": messages[-1]["content"] if len(messages) > 2 else "",
            }
            status = "ok" if reason is None else "rejected"
            reason = f"malformed_row: {reason}" if reason else None
            key = stable_hash(KIND, source_key, number)
            batch.append((Item(key, run_id, STAGE, KIND, status, payload, reason), [source_key]))
            counts[status] += 1
        ledger.put_items(batch)
    if captures:
        ledger.put_items(captured_items(run_id, fingerprint, len(paths), captures, system_prompt, counts))
    if creator_replies:
        group = len(paths) + bool(captures)
        ledger.put_items(reply_items(run_id, fingerprint, group, creator_replies, counts))
    return counts, fingerprint


def reply_items(
    run_id: str, fingerprint: str, group: int, conversations: list[list[Message]], counts: dict[str, int]
) -> list[tuple[Item, list[str]]]:
    """The creator's own replies to comments (synth.persona.replies_file, those not held out), each as the student
    is trained on a reply in the creator's voice."""
    batch: list[tuple[Item, list[str]]] = []
    for number, messages in enumerate(conversations):
        payload = {
            "recipe": KIND,
            "fingerprint": fingerprint,
            "order": [group, number],
            "source": {"creator_reply": number},
            "id": None,
            "messages": messages,
            "question": messages[1]["content"],
            "answer": messages[-1]["content"],
        }
        batch.append((Item(stable_hash(KIND, fingerprint, "creator", number), run_id, STAGE, KIND, "ok", payload), []))
        counts["ok"] += 1
    return batch


def captured_items(
    run_id: str, fingerprint: str, group: int, captures: list[Item], system_prompt: str, counts: dict[str, int]
) -> list[tuple[Item, list[str]]]:
    """The proxy's captured exchanges as import items, the group after the files', each the child of its capture."""
    batch: list[tuple[Item, list[str]]] = []
    for number, capture in enumerate(captures):
        messages, reason = row_messages(capture.payload, system_prompt)
        payload = {
            "recipe": KIND,
            "fingerprint": fingerprint,
            "order": [group, number],
            "source": {"capture": capture.key, "key": capture.payload.get("key"), "time": capture.payload.get("time")},
            "id": capture.key,
            "messages": messages,
            "question": messages[1]["content"] if len(messages) > 1 else "",
            "answer": messages[-1]["content"] if len(messages) > 2 else "",
        }
        status = "ok" if reason is None else "rejected"
        item = Item(
            stable_hash(KIND, fingerprint, capture.key),
            run_id,
            STAGE,
            KIND,
            status,
            payload,
            f"malformed_row: {reason}" if reason else None,
        )
        batch.append((item, [capture.key]))
        counts[status] += 1
    return batch
