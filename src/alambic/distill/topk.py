"""The teacher's top-k log-probs of the training set, for `sparse`: computed once, reused across epochs and runs.

A store holds, per training item, the teacher's rows for the answer tokens only (row j: the distribution of
answer token j), from a local teacher (transformers or GGUF) or from the API logprobs synth stored. Its id
hashes everything its contents depend on, so any run with the same teacher, dataset and settings reuses it.
It is a ledger artifact whose parents are the dataset and the teacher, so lineage reaches it from the student.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from alambic.config import DistillSection
from alambic.distill.api_logprobs import MISSING, MappingCounts, Missing, TokenBytes, as_top_k, map_answer
from alambic.distill.logits_store import IncompleteStoreError, LogitsStore, LogitsStoreWriter
from alambic.distill.teachers import GGUFTeacher, HFTeacher, shared_width
from alambic.distill.train import use_bf16
from alambic.errors import AlambicError
from alambic.hashing import dir_bytes, dir_sha256, file_sha256, stable_hash
from alambic.models.embedded import EMBEDDED_NAME, embedded_hf_dir
from alambic.scoring.batches import Example, encode
from alambic.stage import progress_bar
from alambic.store import Artifact, Item, Ledger

# The teacher reads its own prompt (with the document chunk), which can be much longer than the student's.
TEACHER_LENGTH_FACTOR = 4

Warn = Callable[[str], None]


@dataclass
class TeacherModel:
    name: str
    path: Path

    @property
    def is_gguf(self) -> bool:
        return self.path.suffix.lower() == ".gguf"

    def sha256(self) -> str:
        return file_sha256(self.path) if self.is_gguf else dir_sha256(self.path)


@dataclass
class StoreInfo:
    store: LogitsStore
    artifact_id: str
    reused: bool
    summary: dict[str, Any] = field(default_factory=dict)


def local_teacher(settings: DistillSection, project_root: Path) -> TeacherModel:
    if settings.teacher_model == "embedded":
        return TeacherModel(EMBEDDED_NAME, embedded_hf_dir())
    path = Path(settings.teacher_model).expanduser()
    path = path if path.is_absolute() else project_root / path
    if not (path.suffix.lower() == ".gguf" and path.is_file()) and not (path / "config.json").is_file():
        raise AlambicError(f"distill.teacher_model: {path} is neither a GGUF file nor a transformers model folder")
    return TeacherModel(str(path), path)


def teacher_examples(
    tokenizer: Any, items: Sequence[Item], students: Sequence[Example], settings: DistillSection
) -> list[Example]:
    """What the local teacher reads: its own prompt and the answer, where it tokenises the answer the same way."""
    if settings.teacher_context == "student":
        return list(students)
    result = []
    for item, student in zip(items, students, strict=True):
        prompt = item.payload.get("teacher_messages")
        example = student
        if prompt:
            own = encode(
                tokenizer, [*prompt, item.payload["messages"][-1]], TEACHER_LENGTH_FACTOR * settings.max_seq_len
            )
            count = min(len(own.answer_ids), len(student.answer_ids))
            example = own if own.answer_ids[:count] == student.answer_ids[:count] else student
        result.append(Example(example.input_ids, example.labels, item.key))
    return result


def record_teacher(ledger: Ledger, run_id: str, name: str, path: Path | None = None, sha: str | None = None) -> str:
    """The teacher as a ledger artifact (a model file or folder, or a remote API by name); returns its id."""
    artifact_id = f"teacher-{(sha or stable_hash(name))[:12]}"
    if ledger.artifact(artifact_id) is None:
        size = None if path is None else (path.stat().st_size if path.is_file() else dir_bytes(path))
        where = name if path is None else str(path)
        ledger.add_artifact(Artifact(artifact_id, run_id, "teacher", where, sha, size, {"name": name}, time.time()))
    return artifact_id


def _existing(ledger: Ledger, artifact_id: str) -> LogitsStore | None:
    artifact = ledger.artifact(artifact_id)
    if artifact is None:
        return None
    try:
        return LogitsStore(artifact.path)
    except IncompleteStoreError:
        return None


def _record_store(
    ledger: Ledger, run_id: str, artifact_id: str, path: Path, parents: list[str], meta: dict[str, Any]
) -> LogitsStore:
    store = LogitsStore(path)
    meta = {**meta, "k": store.k, "examples": len(store), "bytes_per_token": round(store.bytes_per_token(), 1)}
    artifact = Artifact(artifact_id, run_id, "teacher-logits", str(path), None, dir_bytes(path), meta, time.time())
    ledger.add_artifact(artifact, parents=parents)
    return store


def local_store(
    ledger: Ledger,
    run_id: str,
    folder: Callable[[str], Path],
    settings: DistillSection,
    dataset_id: str,
    teachers: Sequence[Example],
    student: tuple[dict[str, int], int, int],
    project_root: Path,
    console: Console,
    warn: Warn,
) -> StoreInfo:
    """The top-k of a local teacher over the answers of `teachers` (its inputs, in training order).

    ``student`` is the student's vocabulary, number of logits and pad id.
    """
    model = local_teacher(settings, project_root)
    sha = model.sha256()
    student_width = student[1]
    inputs = ("local", sha, dataset_id, settings.top_k, settings.max_seq_len, settings.teacher_context, student_width)
    artifact_id = f"logits-{stable_hash(*inputs)[:12]}"
    summary = {"source": "local", "teacher": model.name}
    if (store := _existing(ledger, artifact_id)) is not None:
        return StoreInfo(store, artifact_id, True, summary)
    path = folder(artifact_id) / "topk"
    if not path.is_dir():  # else written by a run that stopped before recording it
        _write_local(path, model, settings, dataset_id, teachers, student, console, warn)
    teacher_id = record_teacher(ledger, run_id, model.name, model.path, sha)
    store = _record_store(
        ledger, run_id, artifact_id, path, [dataset_id, teacher_id], {**summary, "teacher_sha256": sha}
    )
    return StoreInfo(store, artifact_id, False, summary)


def _write_local(
    path: Path,
    model: TeacherModel,
    settings: DistillSection,
    dataset_id: str,
    teachers: Sequence[Example],
    student: tuple[dict[str, int], int, int],
    console: Console,
    warn: Warn,
) -> None:
    vocab, width, pad_id = student
    longest = max(len(example.input_ids) for example in teachers)
    scorer = (
        GGUFTeacher(model.path, longest + 8) if model.is_gguf else HFTeacher(model.path, use_bf16(settings.precision))
    )
    width = shared_width(
        scorer.vocab, vocab, scorer.width, width, teacher_name=model.name, method=settings.method, warn=warn
    )
    writer = LogitsStoreWriter(
        path, k=settings.top_k, vocab_size=width, teacher=model.name, dataset_hash=dataset_id, extra={"rows": "answer"}
    )
    todo = [example for example in teachers if example.key not in writer]
    with writer, progress_bar(console) as progress:
        task = progress.add_task("distill: teacher top-k", total=len(teachers), completed=len(teachers) - len(todo))
        for start in range(0, len(todo), settings.batch_size):
            chunk = todo[start : start + settings.batch_size]
            for example, top in zip(chunk, scorer.top_k(chunk, settings.top_k, width, pad_id, longest), strict=True):
                writer.add(example.key, top.ids, top.logprobs)
            progress.update(task, advance=len(chunk))
    if isinstance(scorer, GGUFTeacher):
        scorer.close()


def api_store(
    ledger: Ledger,
    run_id: str,
    folder: Callable[[str], Path],
    settings: DistillSection,
    dataset_id: str,
    items: Sequence[Item],
    students: Sequence[Example],
    tokenizer: Any,
    warn: Warn,
    fetched: Callable[[Item], str] | None = None,
) -> StoreInfo:
    """The top_logprobs synth stored with each answer, mapped onto the student's token ids; for answers without,
    those fetched from the teacher afterwards (under the ledger key ``fetched(item)``), if any."""
    teachers = sorted({str(item.payload.get("teacher", "unknown")) for item in items})
    vocab = TokenBytes(tokenizer)
    fetched_keys = [fetched(item) for item in items] if fetched else []
    inputs = ("api", dataset_id, settings.max_seq_len, vocab.of_id, fetched_keys)
    artifact_id = f"logits-{stable_hash(*inputs)[:12]}"
    counts, k = MappingCounts(), 0
    for _, mapped in _mapped_answers(ledger, items, students, vocab, fetched):
        counts.add(mapped)
        if isinstance(mapped, list):
            k = max(k, *(len(row) for row in mapped))
    _check_counts(counts, len(items), warn)
    summary = {"source": "api", "teacher": ", ".join(teachers), "api_logprobs": counts.as_dict()}
    if (store := _existing(ledger, artifact_id)) is not None:
        return StoreInfo(store, artifact_id, True, summary)
    path = folder(artifact_id) / "topk"
    if not path.is_dir():  # else written by a run that stopped before recording it
        extra = {"rows": "answer", **counts.as_dict()}
        with LogitsStoreWriter(
            path, k=k, vocab_size=len(vocab.of_id), teacher=summary["teacher"], dataset_hash=dataset_id, extra=extra
        ) as writer:
            for key, mapped in _mapped_answers(ledger, items, students, vocab, fetched):
                if isinstance(mapped, list) and key not in writer:
                    top = as_top_k(mapped, k)
                    writer.add(key, top.ids, top.logprobs)
    parents = [dataset_id, *(record_teacher(ledger, run_id, name) for name in teachers)]
    store = _record_store(ledger, run_id, artifact_id, path, parents, summary)
    return StoreInfo(store, artifact_id, False, summary)


def _mapped_answers(
    ledger: Ledger,
    items: Sequence[Item],
    students: Sequence[Example],
    vocab: TokenBytes,
    fetched: Callable[[Item], str] | None,
) -> Iterator[tuple[str, list[dict[int, float]] | Missing | None]]:
    """Per item: its mapped rows, None if its tokens are not the student's, or MISSING. Read one at a time."""
    for item, student in zip(items, students, strict=True):
        key = item.payload.get("response")
        entries = ledger.logprobs(key) if key else None
        if entries is None and fetched is not None:
            entries = ledger.logprobs(fetched(item))
        yield item.key, MISSING if entries is None else map_answer(entries, student.answer_ids, vocab)


def _check_counts(counts: MappingCounts, total: int, warn: Warn) -> None:
    if counts.mapped == 0 and counts.mismatched == 0:
        raise AlambicError(
            "distill.logits_source = 'api': no training item has stored teacher logprobs; set synth.logprobs "
            "(e.g. 20) and run synth again, or use logits_source = 'local'"
        )
    if counts.mapped == 0:
        raise AlambicError(
            f"distill.logits_source = 'api': the teacher's tokens match the student's tokenisation for none of "
            f"{counts.mismatched} answers, so it has another tokenizer; use distill.method = 'sft'"
        )
    if counts.mapped < total:
        warn(
            f"{total - counts.mapped} of {total} items train on CE only: {counts.mismatched} whose teacher tokens "
            f"are not the student's tokenisation of the answer, {counts.missing} without stored logprobs"
        )
