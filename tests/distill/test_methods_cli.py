"""kd, sparse (local and API top-k) end to end through the distill stage, on a project the mock teacher wrote."""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from alambic import distill
from alambic.dataset import FAQ_KIND, latest_synth_run, split_items
from alambic.distill.api_logprobs import TokenBytes
from alambic.distill.logits_store import LogitsStore
from alambic.errors import AlambicError
from alambic.models.hf import load_tokenizer
from alambic.project import Project
from alambic.scoring.batches import encode
from alambic.stage import StageReport
from alambic.store import Item, Ledger
from alambic.store.ledger import StoredResponse

from ..conftest import GROUNDED_ONLY, mock_teacher, run_cli, small_config, write_project

pytestmark = pytest.mark.integration
SYNTH = "max_chunks = 6\nquestions_per_chunk = 2\nheldout_fraction = 0.34\n" + GROUNDED_ONLY


@pytest.fixture(scope="module")
def synthesised(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    with mock_teacher() as url:
        teacher = f"backend = 'openai'\nbase_url = '{url}'\nmodel = 'mock'\nconcurrency = 8"
        config = small_config(tiny_model_dir, synth=SYNTH, teacher=teacher)
        root = write_project(tmp_path_factory.mktemp("synthesised") / "shop", config)
        run_cli("synth", "--project", root)
    return root


def project(
    synthesised: Path,
    tmp_path: Path,
    tiny_model_dir: Path,
    distill_settings: str,
    teacher: Path | None = None,
    precision: str = "fp32",
) -> Path:
    """A copy of the synthesised project with these [distill] settings (on top of a fast tiny-model base)."""
    root = tmp_path / "shop"
    if not root.exists():
        shutil.copytree(synthesised, root)
    toml = (root / "alambic.toml").read_text(encoding="utf-8")
    before, rest = toml.split("[distill]\n", 1)
    after = rest[rest.index("\n[") :]
    body = (
        f'base = "{tiny_model_dir}"\nteacher_model = "{teacher or tiny_model_dir}"\nprune_layers = 2\nepochs = 2\n'
        f'batch_size = 4\nlearning_rate = 1e-3\nprecision = "{precision}"\n{distill_settings}\n'
    )
    (root / "alambic.toml").write_text(before + "[distill]\n" + body + after, encoding="utf-8")
    return root


def distill_in_process(root: Path, console: Console) -> StageReport:
    opened = Project.open(root)
    try:
        return distill.run(opened, console)
    finally:
        opened.close()


def latest(root: Path) -> tuple[str, dict[str, Any]]:
    with Ledger(root / ".alambic" / "ledger.sqlite") as ledger:
        run = ledger.latest_done("distill")
        assert run is not None
        return run.id, run.summary


def train_items(root: Path) -> list[Item]:
    with Ledger(root / ".alambic" / "ledger.sqlite") as ledger:
        return split_items(ledger, latest_synth_run(ledger))["train"]


def test_kd_and_sparse_train_end_to_end(synthesised: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    root = project(synthesised, tmp_path, tiny_model_dir, "method = 'kd'")
    run_cli("distill", "--project", root)
    kd_run, kd = latest(root)
    assert kd["method"] == "kd" and kd["teacher"] == str(tiny_model_dir)
    assert len(kd["losses"]) == kd["steps"] == 4 and kd["losses"][-1][1] < kd["losses"][0][1]
    assert Path(kd["student_dir"], "model.safetensors").is_file() and kd["kept_layers"] == [0, 3]

    project(synthesised, tmp_path, tiny_model_dir, "method = 'sparse'\ntop_k = 16")
    done = run_cli("distill", "--project", root)
    sparse_run, sparse = latest(root)
    store_id = sparse["logits_store"]
    assert (
        sparse_run != kd_run and sparse["method"] == "sparse" and f"wrote teacher top-k store {store_id}" in done.stderr
    )
    assert sparse["losses"][-1][1] < sparse["losses"][0][1]
    with Ledger(root / ".alambic" / "ledger.sqlite") as ledger:
        artifact = ledger.artifact(store_id)
        assert artifact is not None and artifact.meta["k"] == 16
        teacher_id = next(p for p in ledger.parents(store_id) if p.startswith("teacher-"))
        assert set(ledger.parents(store_id)) == {sparse["dataset"], teacher_id}
        assert store_id in ledger.parents(f"student-{sparse_run}")
        assert teacher_id in ledger.parents(f"student-{kd_run}")
    store = LogitsStore(artifact.path)
    tokenizer = load_tokenizer(tiny_model_dir)
    items = train_items(root)
    assert sorted(store.keys) == sorted(item.key for item in items)
    for item in items:  # one row per answer token (the teacher read its own prompt, with the chunk)
        assert store.tokens(item.key) == len(encode(tokenizer, item.payload["messages"], 384).answer_ids)

    project(synthesised, tmp_path, tiny_model_dir, "method = 'sparse'\ntop_k = 16\nkd_ratio = 0.8")
    console = Console(file=io.StringIO(), width=200)
    report = distill_in_process(root, console)
    assert f"reusing teacher top-k store {store_id}" in console.file.getvalue()
    assert report.run_id not in (kd_run, sparse_run) and report.summary["logits_store"] == store_id


METHODS = {
    "sft": "method = 'sft'",
    "kd": "method = 'kd'\nkd_ratio = 0.5\ntemperature = 2.0",
    "sparse": "method = 'sparse'\ntop_k = 16",
    "gkd": "method = 'gkd'\ngkd_lambda = 0.5\ngkd_max_new_tokens = 8",
}


def test_every_method_runs_end_to_end_under_forced_bf16(
    synthesised: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """bf16 is forced, not left to the CPU: autocast to bf16 runs (slowly) on CPUs without native support. The
    other tests of this file force fp32 (see `project`), as does test_resume's distill, for sft."""
    for method, settings in METHODS.items():
        root = project(synthesised, tmp_path, tiny_model_dir, settings, precision="bf16")
        run_cli("distill", "--project", root)
        _, summary = latest(root)
        assert summary["method"] == method and summary["bf16"] is True
        losses = [loss for _, loss in summary["losses"]]
        assert len(losses) == summary["steps"] == 4 and all(math.isfinite(loss) for loss in losses)
        assert Path(summary["student_dir"], "model.safetensors").is_file()


def alternative_ids(vocab: TokenBytes) -> list[int]:
    """Whole-word tokens, as alternatives a text-only server names unambiguously."""
    return [i for i in range(1000, 1400) if vocab.of_id[i].strip().isalpha() and vocab.of_id[i].startswith(b" ")]


def llamacpp_logprobs(vocab: TokenBytes, ids: list[int]) -> list[dict[str, Any]]:
    """What llama.cpp's server returns: token texts (no bytes), the sampled token among its alternatives."""

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        return {"token": vocab.of_id[token_id].decode("utf-8", "ignore"), "logprob": logprob, "bytes": None}

    others = alternative_ids(vocab)
    return [
        {**entry(i, -0.25), "top_logprobs": [entry(i, -0.25), entry(others[j % len(others)], -1.5)]}
        for j, i in enumerate(ids)
    ]


def test_sparse_from_api_logprobs_stored_with_the_answers(
    synthesised: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    root = project(synthesised, tmp_path, tiny_model_dir, "method = 'sparse'\nlogits_source = 'api'")
    with pytest.raises(AlambicError, match=r"no training item has stored teacher logprobs; set synth\.logprobs"):
        distill_in_process(root, Console(quiet=True))

    tokenizer = load_tokenizer(tiny_model_dir)
    vocab = TokenBytes(tokenizer)
    items = train_items(root)
    written = [item for item in items if item.kind != FAQ_KIND]  # an FAQ answer is the document's: no logprobs
    with_logprobs, other_tokens = written[:-2], written[-2]  # and the last item keeps none
    without = len(items) - len(with_logprobs) - 1
    assert without > 1
    answers: dict[str, list[int]] = {}
    with Ledger(root / ".alambic" / "ledger.sqlite") as ledger:
        for item in [*with_logprobs, other_tokens]:
            text = "\n" + item.payload["answer"] + "\n"  # synth stored the text stripped
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if item is other_tokens:  # a teacher that splits the answer otherwise
                ids = [i for c in item.payload["answer"] for i in tokenizer(c, add_special_tokens=False)["input_ids"]]
            response = StoredResponse(item.payload["answer"], "stop", 10, len(ids), "test")
            ledger.put_response(
                item.payload["response"], "mock", "test", {}, response, 0.1, llamacpp_logprobs(vocab, ids)
            )
            answers[item.key] = encode(tokenizer, item.payload["messages"], 384).answer_ids

    console = Console(file=io.StringIO(), width=200)
    summary = distill_in_process(root, console).summary
    assert summary["api_logprobs"] == {"mapped": len(with_logprobs), "mismatched": 1, "missing": without}
    assert f"{1 + without} of {len(items)} items train on CE only: 1 whose teacher tokens" in console.file.getvalue()
    assert summary["warnings"] and summary["losses"][-1][1] < summary["losses"][0][1]
    with Ledger(root / ".alambic" / "ledger.sqlite") as ledger:
        store = LogitsStore(ledger.artifact(summary["logits_store"]).path)
    assert sorted(store.keys) == sorted(item.key for item in with_logprobs) and store.k == 2
    item = with_logprobs[0]
    top = store.get(item.key)
    answer = answers[item.key][:-2]  # the teacher has no rows for <|im_end|> and the newline after it
    assert len(top.ids) == len(answer)
    others = alternative_ids(vocab)
    for j, token_id in enumerate(answer):  # row j: the teacher's distribution of answer token j
        row = dict(zip(top.ids[j].tolist(), top.logprobs[j].tolist(), strict=True))
        assert row[token_id] == pytest.approx(-0.25, abs=0.03)
        if others[(j + 1) % len(others)] != token_id:  # j + 1: the teacher's leading newline was stripped
            assert row[others[(j + 1) % len(others)]] == pytest.approx(-1.5, abs=0.05)


@pytest.fixture(scope="module")
def short_synthesised(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A few short items: llama-cpp-python's server sorts the whole vocabulary in Python for every prompt token it
    echoes with logprobs (~0.15 s a token here), so scoring costs time in proportion to the prompts' length."""
    synth = "max_chunks = 3\nchunk_chars = 200\nquestions_per_chunk = 2\nheldout_fraction = 0.34\n" + GROUNDED_ONLY
    with mock_teacher(tokens=24) as url:
        teacher = f"backend = 'openai'\nbase_url = '{url}'\nmodel = 'mock'\nconcurrency = 8"
        config = small_config(tiny_model_dir, synth=synth, teacher=teacher)
        root = write_project(tmp_path_factory.mktemp("short") / "shop", config)
        run_cli("synth", "--project", root)
    return root


def test_sparse_fetches_the_missing_logprobs_from_the_teacher_api(
    short_synthesised: Path, tmp_path: Path, tiny_model_dir: Path, llama_server: str
) -> None:
    """Answers written without logprobs (here by the mock) are scored by a real teacher server, once."""
    settings = "method = 'sparse'\nlogits_source = 'api'\nfetch_logprobs = true\ntop_k = 5"
    root = project(short_synthesised, tmp_path, tiny_model_dir, settings)
    toml = (root / "alambic.toml").read_text(encoding="utf-8")
    server = f'backend = "openai"\nbase_url = "{llama_server}"\nmodel = "SmolLM2-135M-Instruct"\n'
    before, rest = toml.split("[teacher]\n", 1)
    (root / "alambic.toml").write_text(before + "[teacher]\n" + server + rest[rest.index("\n[") :], encoding="utf-8")
    items = train_items(root)

    summary = distill_in_process(root, Console(quiet=True)).summary
    assert summary["api_logprobs"] == {"mapped": len(items), "mismatched": 0, "missing": 0}
    with Ledger(root / ".alambic" / "ledger.sqlite") as ledger:
        store = LogitsStore(ledger.artifact(summary["logits_store"]).path)
        asked = fetched_requests(ledger)
    # k alternatives, and the answer's own token where it is not among them
    assert asked == len(items) and 5 <= store.k <= 6 and sorted(store.keys) == sorted(i.key for i in items)
    status = run_cli("status", "--project", root).stdout
    assert "prompt-logprobs" in status

    again = project(short_synthesised, tmp_path, tiny_model_dir, settings + "\nseed = 1")
    assert distill_in_process(again, Console(quiet=True)).summary["logits_store"] == summary["logits_store"]
    with Ledger(root / ".alambic" / "ledger.sqlite") as ledger:
        assert fetched_requests(ledger) == asked


def fetched_requests(ledger: Ledger) -> int:
    return sum(count for _, recipe, count, _, _ in ledger.usage() if recipe == "prompt-logprobs")


@pytest.fixture(scope="module")
def bert_vocabulary_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny causal LM that speaks MiniLM's (BERT) vocabulary: a teacher of another tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from alambic.models.embedded import minilm_dir

    tokenizer = load_tokenizer(minilm_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    path = tmp_path_factory.mktemp("bert-vocabulary")
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def test_a_teacher_with_another_tokenizer_is_refused_in_one_line(
    synthesised: Path, tmp_path: Path, tiny_model_dir: Path, bert_vocabulary_model: Path
) -> None:
    root = project(synthesised, tmp_path, tiny_model_dir, "method = 'kd'", teacher=bert_vocabulary_model)
    with pytest.raises(AlambicError) as error:
        distill_in_process(root, Console(quiet=True))
    message = str(error.value)
    assert "\n" not in message and "different tokenizers" in message
    assert message.endswith("use distill.method = 'sft', which trains on the teacher's answers as text")


def test_gkd_trains_on_the_students_own_answers(synthesised: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    root = project(synthesised, tmp_path, tiny_model_dir, "method = 'gkd'\ngkd_lambda = 1.0\ngkd_max_new_tokens = 8")
    summary = distill_in_process(root, Console(quiet=True)).summary
    assert summary["method"] == "gkd" and summary["on_policy_steps"] == summary["steps"] == 4
    assert all(math.isfinite(loss) for _, loss in summary["losses"])  # also on the student's own samples
