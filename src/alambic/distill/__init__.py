"""distill: train a small student from the teacher: on its answers (sft), its logits (kd, gkd) or its top-k (sparse)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from alambic.config import DistillSection
from alambic.dataset import latest_synth_run, split_items, within_safety_share
from alambic.distill.context import with_retrieved_context
from alambic.distill.fetch_logprobs import FETCH_TOP_K, fetch_missing, fetched_key
from alambic.distill.on_policy import OnPolicy
from alambic.distill.parallel import Parallel
from alambic.distill.student import build_student
from alambic.distill.teachers import DenseTeacher, HFTeacher, SparseTeacher, TeacherSignal, logits_width, shared_width
from alambic.distill.topk import api_store, local_store, local_teacher, record_teacher, teacher_examples
from alambic.distill.train import Trainer, use_bf16
from alambic.errors import AlambicError
from alambic.hashing import dir_bytes, dir_sha256, file_sha256, stable_hash
from alambic.models.embedded import EMBEDDED_NAME, transformers_dir
from alambic.models.hf import load_tokenizer
from alambic.project import Project
from alambic.results import DistillResult
from alambic.scoring.batches import Example, encode
from alambic.stage import StageReport
from alambic.store import Artifact, Item, Ledger

STAGE = "distill"


def base_model_dir(settings: DistillSection, project_root: Path) -> Path:
    return transformers_dir(settings.base, project_root, "distill.base")


def record_dataset(project: Project, items: list[Item], synth_run_id: str, context: str = "none") -> Artifact:
    """The training set as a JSONL artifact, linked to each item it contains. With retrieved context, the
    passages each item was given are part of what the set is."""
    ledger = project.ledger
    keys: list[Any] = [item.key for item in items]
    if context != "none":
        keys.append([item.payload.get("passages") for item in items])
    dataset_id = f"dataset-{stable_hash(keys)[:12]}"
    existing = ledger.artifact(dataset_id)
    if existing is not None:
        return existing
    path = project.artifact_dir(dataset_id) / "train.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps({"id": item.key, "messages": item.payload["messages"]}, ensure_ascii=False))
            handle.write("\n")
    artifact = Artifact(
        dataset_id,
        synth_run_id,
        "dataset",
        str(path),
        file_sha256(path),
        path.stat().st_size,
        {"items": len(items), "split": "train"},
        time.time(),
    )
    ledger.add_artifact(artifact, parents=[item.key for item in items])
    return artifact


def _as_the_agent_reads(project: Project, items: list[Item], tokenizer: Any, parallel: Parallel) -> list[Item]:
    from alambic.agent.retrieval import Retriever, project_index
    from alambic.models.embedded import minilm_dir
    from alambic.models.embeddings import Embedder
    from alambic.prompts import Prompts

    embedder = Embedder(minilm_dir())
    with parallel.main_first():
        index = project_index(project, embedder)
    retriever = Retriever(index, embedder)
    try:
        settings = project.config.distill
        return with_retrieved_context(
            items, retriever, Prompts(project.root), tokenizer, settings.max_seq_len, settings.bare_share
        )
    finally:
        retriever.close()


def run(project: Project, console: Console) -> StageReport:
    started = time.monotonic()
    settings = project.config.distill
    ledger = project.ledger
    synth_run = latest_synth_run(ledger)
    synthesised = split_items(ledger, synth_run)["train"]
    if not synthesised:
        raise AlambicError("distill: the synth run produced no accepted training items; see `alambic status`")
    train_items = within_safety_share(synthesised, project.config.synth.recipes)
    if dropped := len(synthesised) - len(train_items):
        refusals = sum(item.kind == "safety" for item in synthesised)
        console.print(
            f"distill: trains on {refusals - dropped} of {refusals} refusals, the safety recipe's share of the mix "
            "(other recipes filled less than their targets)"
        )
    parallel = Parallel()
    base_dir = base_model_dir(settings, project.root)
    tokenizer = load_tokenizer(base_dir)
    if settings.context == "retrieved":
        train_items = _as_the_agent_reads(project, train_items, tokenizer, parallel)
    with parallel.main_first():
        dataset = record_dataset(project, train_items, synth_run.id, settings.context)
    base_name = EMBEDDED_NAME if settings.base == "embedded" else str(base_dir)
    config_hash = stable_hash(settings.fingerprint(), base_name)
    run_id = f"distill-{stable_hash(config_hash, dataset.id)[:12]}"
    run = ledger.start_run(run_id, STAGE, config_hash, dataset.id)
    if run.state == "done":
        return StageReport(STAGE, run_id, True, run.result(DistillResult))

    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        console.print(f"[yellow]distill: warning:[/] {escape(message)}", highlight=False, soft_wrap=True)

    run_dir = project.artifact_dir(run_id)
    init_dir, student_dir = run_dir / "init", run_dir / "student"
    examples = [encode(tokenizer, item.payload["messages"], settings.max_seq_len, item.key) for item in train_items]
    with parallel.main_first():
        init_info = _initial_student(
            ledger, run_id, base_dir, base_name, init_dir, settings, examples, tokenizer.pad_token_id
        )
    console.print(f"distill: student keeps layers {init_info['kept_layers']} of {init_info['base_layers']}")
    model, tokenizer = _trainable_student(init_dir, settings)
    with parallel.main_first():
        teacher, on_policy, teacher_info = _teacher(
            project, run_id, settings, dataset.id, train_items, examples, tokenizer, model, console, warn, parallel
        )
    checkpoint = run_dir / "checkpoint"
    trainer = Trainer(model, examples, tokenizer.pad_token_id, settings, checkpoint, teacher, on_policy, parallel)
    if trainer_resumes := checkpoint.exists():
        console.print(f"distill: resuming {run_id} from its last checkpoint")
    result = trainer.train(console)
    if result.interrupted:
        raise AlambicError(f"distill: stopped at step {result.losses[-1][0]}; run again to resume")

    weights = trainer.weights() if parallel.processes > 1 else None
    summary = DistillResult(
        **init_info,
        **teacher_info,
        method=settings.method,
        adapter=settings.adapter,
        examples=len(examples),
        steps=result.steps,
        resumed_from_step=result.resumed_from if trainer_resumes else 0,
        losses=result.losses,
        on_policy_steps=sum(on_policy.applies(step) for step in range(result.steps)) if on_policy else 0,
        train_tokens=result.tokens,
        tokens_per_second=round(result.tokens_per_second, 1),
        bf16=trainer.bf16,
        processes=parallel.processes,
        dataset=dataset.id,
        init_dir=str(init_dir),
        student_dir=str(student_dir),
        warnings=warnings,
    )
    if not parallel.is_main:  # the main process saves and records the student
        return StageReport(STAGE, run_id, False, summary, time.monotonic() - started)
    shutil.rmtree(student_dir, ignore_errors=True)
    model.save_pretrained(student_dir, safe_serialization=True, **({"state_dict": weights} if weights else {}))
    tokenizer.save_pretrained(student_dir)
    student = Artifact(
        f"student-{run_id}",
        run_id,
        "student",
        str(student_dir),
        dir_sha256(student_dir),
        dir_bytes(student_dir),
        {"adapter": settings.adapter, "method": settings.method},
        time.time(),
    )
    parents = [dataset.id, f"student-init-{run_id}", *teacher_info.get("teacher_artifacts", [])]
    ledger.add_artifact(student, parents=parents)
    shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    ledger.finish_run(run_id, summary)
    return StageReport(STAGE, run_id, False, summary, time.monotonic() - started)


def _teacher(
    project: Project,
    run_id: str,
    settings: DistillSection,
    dataset_id: str,
    items: list[Item],
    examples: list[Example],
    tokenizer: Any,
    model: Any,
    console: Console,
    warn: Callable[[str], None],
    parallel: Parallel,
) -> tuple[TeacherSignal | None, OnPolicy | None, dict[str, Any]]:
    """What the student learns from besides the answers' text (gkd: also from its own), and what to record."""
    if settings.method == "sft":
        return None, None, {}
    student = (tokenizer.get_vocab(), logits_width(model), tokenizer.pad_token_id)
    if settings.method == "sparse" and settings.logits_source == "api":
        fetched = None
        if settings.fetch_logprobs:
            section, k = project.config.teacher, min(settings.top_k, FETCH_TOP_K)
            fetch_missing(project.ledger, items, tokenizer, section, project.root, k, console)
            fetched = partial(fetched_key, section, k=k)
        folder = project.artifact_dir
        info = api_store(
            project.ledger, run_id, folder, settings, dataset_id, items, examples, tokenizer, warn, fetched
        )
    elif settings.method == "sparse":
        teachers = teacher_examples(tokenizer, items, examples, settings)
        folder = project.artifact_dir
        info = local_store(
            project.ledger, run_id, folder, settings, dataset_id, teachers, student, project.root, console, warn
        )
    else:
        return _dense_teacher(project, run_id, settings, items, examples, tokenizer, student, warn, parallel.device)
    verb = "reusing" if info.reused else "wrote"
    bytes_per_token = info.store.bytes_per_token()
    console.print(f"distill: {verb} teacher top-k store {info.artifact_id} ({bytes_per_token:.0f} B/token)")
    record = {**info.summary, "logits_store": info.artifact_id, "teacher_artifacts": [info.artifact_id]}
    return SparseTeacher(info.store, examples, settings.tail), None, record


def _dense_teacher(
    project: Project,
    run_id: str,
    settings: DistillSection,
    items: list[Item],
    examples: list[Example],
    tokenizer: Any,
    student: tuple[dict[str, int], int, int],
    warn: Callable[[str], None],
    device: Any,
) -> tuple[TeacherSignal, OnPolicy | None, dict[str, Any]]:
    """The local teacher of kd and gkd, run on every batch (gkd: also on the student's own answers)."""
    model = local_teacher(settings, project.root)
    if model.is_gguf:
        raise AlambicError(
            f"distill.method = '{settings.method}' runs the teacher on every batch and needs a transformers model; "
            "for a GGUF teacher use method = 'sparse' (its top-k are computed once)"
        )
    teacher = HFTeacher(model.path, use_bf16(settings.precision, device), device)
    vocab, width, pad_id = student
    shared_width(teacher.vocab, vocab, teacher.width, width, teacher_name=model.name, method=settings.method, warn=warn)
    teacher_id = record_teacher(project.ledger, run_id, model.name, model.path, model.sha256())
    teachers = teacher_examples(tokenizer, items, examples, settings)
    on_policy = None
    if settings.method == "gkd":
        on_policy = OnPolicy(teacher, examples, teachers, settings, pad_id, tokenizer.eos_token_id)
    info = {"teacher": model.name, "teacher_artifacts": [teacher_id]}
    return DenseTeacher(teacher, teachers, examples, pad_id), on_policy, info


def _initial_student(
    ledger: Ledger,
    run_id: str,
    base_dir: Path,
    base_name: str,
    init_dir: Path,
    settings: DistillSection,
    examples: list[Example],
    pad_id: int,
) -> dict[str, Any]:
    artifact_id = f"student-init-{run_id}"
    existing = ledger.artifact(artifact_id)
    if existing is not None and init_dir.is_dir():
        return existing.meta
    shutil.rmtree(init_dir, ignore_errors=True)
    measured = examples[: settings.importance_examples]
    info = build_student(base_dir, init_dir, settings.prune_layers, settings.prune_strategy, measured, pad_id)
    info["base"] = base_name
    ledger.add_artifact(
        Artifact(
            artifact_id,
            run_id,
            "student-init",
            str(init_dir),
            dir_sha256(init_dir),
            dir_bytes(init_dir),
            info,
            time.time(),
        )
    )
    return info


def _trainable_student(init_dir: Path, settings: DistillSection) -> tuple[Any, Any]:
    from alambic.models.hf import load_causal_lm

    model = load_causal_lm(init_dir)
    return (with_lora(model, settings) if settings.adapter == "lora" else model), load_tokenizer(init_dir)


def with_lora(model: Any, settings: DistillSection) -> Any:
    """The model with LoRA adapters on every attention and MLP projection, the base frozen. The projections are
    found in the model's decoder layers, whatever the family calls them."""
    from peft import LoraConfig, get_peft_model

    from alambic.distill.student import lora_targets

    lora = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=0.0,
        target_modules=lora_targets(model),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)
