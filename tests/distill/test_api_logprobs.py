"""API logprobs (token strings and bytes) mapped onto the student's token ids, only where the tokenisations agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alambic.distill.api_logprobs import FILLER_LOGPROB, TokenBytes, as_top_k, map_answer
from alambic.models.hf import load_tokenizer
from alambic.scoring.batches import encode

ANSWER = "Yes, we ship to Egypt ☕ نعم، خلال 6 إلى 10 أيام."
MESSAGES = [{"role": "user", "content": "Do you ship to Egypt?"}, {"role": "assistant", "content": ANSWER}]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def vocab(tokenizer: Any) -> TokenBytes:
    return TokenBytes(tokenizer)


def entries(tokenizer: Any, vocab: TokenBytes, text: str, style: str) -> list[dict[str, Any]]:
    """What a server returns for `text`: OpenAI gives each token's bytes; llama.cpp decodes it alone, lossily."""

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        raw = vocab.of_id[token_id]
        if style == "openai":
            return {"token": raw.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(raw)}
        return {"token": raw.decode("utf-8", "ignore"), "logprob": logprob, "bytes": None}

    result = []
    for position, token_id in enumerate(tokenizer(text, add_special_tokens=False)["input_ids"]):
        alternatives = [entry(token_id, -0.5), entry(1000 + position, -1.5), entry(2000 + position, -2.5)]
        result.append({**entry(token_id, -0.5), "top_logprobs": alternatives})
    return result


def test_token_bytes_spell_out_any_text(tokenizer: Any, vocab: TokenBytes) -> None:
    ids = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    assert b"".join(vocab.of_id[i] for i in ids) == ANSWER.encode("utf-8")
    assert any(vocab.is_partial_character(i) for i in ids)  # the emoji and Arabic split inside characters
    assert all(vocab.id_of[vocab.of_id[i]] == i for i in ids)
    assert vocab.of_id[tokenizer.convert_tokens_to_ids("<|im_end|>")] == b"<|im_end|>"


@pytest.mark.parametrize("style", ["openai", "llamacpp"])
def test_logprobs_map_onto_the_students_answer_tokens(tokenizer: Any, vocab: TokenBytes, style: str) -> None:
    answer_ids = encode(tokenizer, MESSAGES, 256).answer_ids  # the answer, then <|im_end|> and a newline
    # synth stores the stripped text: the teacher's surrounding whitespace tokens are dropped
    teacher = entries(tokenizer, vocab, "\n" + ANSWER + "\n\n", style)
    rows = map_answer(teacher, answer_ids, vocab)
    assert rows is not None
    assert len(rows) == len(tokenizer(ANSWER, add_special_tokens=False)["input_ids"]) == len(answer_ids) - 2
    for j, row in enumerate(rows):
        assert row[answer_ids[j]] == -0.5
        if style == "openai":
            assert row[1000 + j + 1] == -1.5 and row[2000 + j + 1] == -2.5  # +1: the leading newline's position
        else:  # llama.cpp cannot name the alternatives that split a character: they are dropped
            readable = [i for i in (1000 + j + 1, 2000 + j + 1) if not vocab.is_partial_character(i)]
            assert set(row) == {answer_ids[j], *readable}


def test_another_tokenisation_or_answer_is_rejected(tokenizer: Any, vocab: TokenBytes) -> None:
    answer_ids = encode(tokenizer, MESSAGES, 256).answer_ids
    by_character = [{"token": c, "logprob": -0.1, "bytes": list(c.encode()), "top_logprobs": []} for c in ANSWER]
    assert map_answer(by_character, answer_ids, vocab) is None
    assert map_answer(entries(tokenizer, vocab, "No, we do not ship there.", "openai"), answer_ids, vocab) is None
    assert map_answer([], answer_ids, vocab) is None


def test_rows_of_different_widths_become_k_distinct_ids() -> None:
    top = as_top_k([{5: -0.1, 0: -2.0}, {7: -3.0, 1: -0.2, 2: -1.0, 9: -4.0, 3: -5.0}], k=4)
    assert top.ids[0].tolist()[:2] == [5, 0] and top.logprobs[0].tolist()[2:] == [FILLER_LOGPROB] * 2
    assert top.ids[1].tolist() == [1, 2, 7, 9]  # the four most likely of five
    assert all(len(set(row)) == 4 for row in top.ids.tolist())


@pytest.mark.integration
def test_llama_cpp_servers_logprobs_agree_with_the_local_teacher(llama_server: str) -> None:
    """Before trusting a server's top_logprobs: for a real answer, compare them with the same model run here,
    in llama.cpp (the same GGUF: only kernel rounding differs) and in transformers (dequantised weights)."""
    import httpx
    import torch

    from alambic.distill.teachers import GGUFTeacher, HFTeacher
    from alambic.models.embedded import embedded_gguf, embedded_hf_dir

    question = [{"role": "user", "content": "How long do roasted coffee beans stay fresh? Two sentences."}]
    body = {"messages": question, "max_tokens": 48, "temperature": 0, "logprobs": True, "top_logprobs": 5}
    reply = httpx.post(f"{llama_server}/chat/completions", json={**body, "repeat_penalty": 1.0}, timeout=120)
    choice = reply.json()["choices"][0]
    tokenizer = load_tokenizer(embedded_hf_dir())
    answer = {"role": "assistant", "content": choice["message"]["content"].strip()}
    example = encode(tokenizer, [*question, answer], 512)
    rows = map_answer(choice["logprobs"]["content"], example.answer_ids, TokenBytes(tokenizer))
    assert rows is not None and len(rows) >= 20

    gguf = GGUFTeacher(embedded_gguf(), 600)
    hf = HFTeacher(embedded_hf_dir(), False)
    width = len(tokenizer)
    # Measured: top-1 agreement 0.90-1.0 and a mean gap of 0.04-0.10 nats on either; near ties flip.
    for local in (gguf, hf):
        top = local.top_k([example], 64, width, tokenizer.pad_token_id, 600)[0]
        agree, gaps = 0, []
        for j, row in enumerate(rows):
            here = dict(zip(top.ids[j].tolist(), top.logprobs[j].tolist(), strict=True))
            agree += int(top.ids[j, 0]) == max(row, key=row.__getitem__)
            gaps += [abs(here[token] - logprob) for token, logprob in row.items() if token in here]
        assert agree / len(rows) >= 0.85
        assert float(torch.tensor(gaps).mean()) < 0.15
    gguf.close()


@pytest.mark.integration
def test_log_probs_fetched_for_a_given_answer_are_the_local_teachers(llama_server: str, tmp_path: Path) -> None:
    """An answer the teacher did not write (imported): the server scores it by echo, once, and its rows are the
    local model's distribution at each of the answer's tokens (up to the end of turn, as a chat answer's)."""
    import torch
    from rich.console import Console

    from alambic.config import TeacherSection
    from alambic.distill.fetch_logprobs import fetch_missing, fetched_key
    from alambic.models.embedded import embedded_hf_dir
    from alambic.models.hf import load_causal_lm
    from alambic.store import Item, Ledger

    section = TeacherSection(
        backend="openai", base_url=llama_server, model="SmolLM2-135M-Instruct", extra_body={"repeat_penalty": 1.0}
    )
    answer = "We roast every Tuesday and Thursday, and ship the next morning. نعم، نشحن إلى مصر."
    messages = [{"role": "user", "content": "When do you roast?"}, {"role": "assistant", "content": answer}]
    item = Item("item-1", "import-run", "synth", "import", "ok", {"messages": messages})
    tokenizer = load_tokenizer(embedded_hf_dir())
    quiet = Console(quiet=True)
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        assert fetch_missing(ledger, [item], tokenizer, section, tmp_path, 5, quiet) == 1
        assert fetch_missing(ledger, [item], tokenizer, section, tmp_path, 5, quiet) == 0  # stored, not asked again
        entries = ledger.logprobs(fetched_key(section, item, 5))
    example = encode(tokenizer, messages, 512)
    rows = map_answer(entries or [], example.answer_ids, TokenBytes(tokenizer))
    assert rows is not None and len(rows) == example.answer_ids.index(tokenizer.convert_tokens_to_ids("<|im_end|>"))

    model = load_causal_lm(embedded_hf_dir())
    with torch.no_grad():
        local = torch.log_softmax(model(torch.tensor([example.input_ids])).logits[0].float(), -1)
    gaps = [
        abs(float(local[example.answer_start + j, token]) - row[token])
        for j, (row, token) in enumerate(zip(rows, example.answer_ids, strict=False))
    ]
    assert float(torch.tensor(gaps).mean()) < 0.15
