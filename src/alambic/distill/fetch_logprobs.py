"""A teacher API's log-probs of answers it did not capture while writing them (imported answers, or synth run
without `synth.logprobs`): the completions endpoint scores the whole conversation with `echo`, and the rows of
the answer's tokens become the same entries a chat completion's `logprobs` gives.

Each answer is one request, stored in the ledger like a teacher response (recipe "prompt-logprobs"), so a
stopped run asks only for what is missing, and the requests show in `alambic status` with the others.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from alambic.config import TeacherSection
from alambic.distill.api_logprobs import TokenBytes
from alambic.errors import AlambicError
from alambic.hashing import stable_hash
from alambic.models import ChatModel, open_teacher, teacher_id
from alambic.stage import progress_bar
from alambic.store import Item, Ledger
from alambic.store.ledger import StoredResponse

RECIPE = "prompt-logprobs"
FETCH_TOP_K = 20  # what OpenAI-compatible servers return at most by default (vLLM's max_logprobs)


def fetched_key(teacher: TeacherSection, item: Item, k: int) -> str:
    """The ledger key of the log-probs fetched for an item's answer."""
    return f"{RECIPE}-{stable_hash(teacher_id(teacher), item.key, k)[:16]}"


def conversation_text(tokenizer: Any, item: Item) -> tuple[str, int, list[int]]:
    """The conversation the teacher answered (with its own prompt, when it had one) as text, the number of
    tokens before the answer, and the answer's tokens up to the end-of-turn marker."""
    prompt = item.payload.get("teacher_messages") or item.payload["messages"][:-1]
    head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*prompt, item.payload["messages"][-1]], tokenize=False)
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full, add_special_tokens=False)["input_ids"][len(head_ids) :]
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    content = list(itertools.takewhile(lambda token: token not in special, answer_ids))
    return full, len(head_ids), content


def answer_entries(
    echoed: dict[str, Any], content: list[int], vocab: TokenBytes, near: int
) -> list[dict[str, Any]] | None:
    """The echoed rows of the answer's tokens, as the entries of a chat completion's `logprobs`.

    Servers list the prompt's tokens differently (llama.cpp leaves out every token equal to its BOS id, as
    <|im_start|> is for SmolLM2; the generated token may follow), so the answer is found where the listed
    tokens spell it, the nearest such place to where it starts in the student's tokenisation."""
    columns = (echoed["tokens"], echoed["token_logprobs"], echoed["top_logprobs"])
    entries = [
        {
            "token": token,
            "logprob": logprob,
            "bytes": None,
            "top_logprobs": [{"token": text, "logprob": value, "bytes": None} for text, value in (top or {}).items()],
        }
        for token, logprob, top in zip(*columns, strict=True)
    ]
    for start in sorted(range(len(entries) - len(content) + 1), key=lambda start: abs(start - near)):
        window = entries[start : start + len(content)]
        if all(e["logprob"] is not None and vocab.matches(e, t) for e, t in zip(window, content, strict=True)):
            return window
    return None


def fetch_missing(
    ledger: Ledger,
    items: Sequence[Item],
    tokenizer: Any,
    teacher: TeacherSection,
    project_root: Path,
    k: int,
    console: Console,
) -> int:
    """Ask the teacher for the log-probs of every answer that has none stored; returns how many were asked."""
    todo = [
        item
        for item in items
        if ledger.logprobs(item.payload.get("response") or "") is None
        and ledger.logprobs(fetched_key(teacher, item, k)) is None
    ]
    if not todo:
        return 0
    if teacher.backend != "openai":
        raise AlambicError(
            "distill.fetch_logprobs asks the [teacher] API for log-probs; it needs backend = 'openai' "
            "(a vLLM or llama.cpp server: their completions endpoint scores a given text)"
        )
    client = open_teacher(teacher, project_root)
    with progress_bar(console) as progress:
        task = progress.add_task("distill: teacher log-probs over the API", total=len(todo))
        asyncio.run(_fetch(ledger, todo, tokenizer, teacher, k, client, lambda: progress.advance(task)))
    return len(todo)


async def _fetch(
    ledger: Ledger,
    todo: Sequence[Item],
    tokenizer: Any,
    teacher: TeacherSection,
    k: int,
    client: ChatModel,
    advance: Callable[[], None],
) -> None:
    vocab = TokenBytes(tokenizer)

    async def one(item: Item) -> None:
        full, near, content = conversation_text(tokenizer, item)
        answer = await client.aprompt_logprobs(full, k)
        # An answer the server tokenises otherwise is stored with no rows: it trains on CE, and is counted.
        entries = answer_entries(answer.rows, content, vocab, near) or []
        stored = StoredResponse("", "length", int(answer.prompt_tokens), 1, answer.endpoint)
        request = {"prompt": full, "echo": True, "logprobs": k, "item": item.key}
        key = fetched_key(teacher, item, k)
        ledger.put_response(key, teacher.model, RECIPE, request, stored, answer.seconds, entries)
        advance()

    try:
        await asyncio.gather(*(one(item) for item in todo))
    finally:
        await client.aclose()
