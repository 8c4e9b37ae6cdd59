"""release: the gate decides from the safety figures; then the student as safetensors (LoRA merged) and GGUF
(open), or served only behind its guard (api-only), with a model card, licence files, a manifest of hashes and
lineage, and a signature."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from rich.console import Console

from alambic.dataset import latest_distill_run
from alambic.errors import AlambicError, GateBlocked
from alambic.hashing import file_sha256, stable_hash
from alambic.models.embedded import EMBEDDED_REPO, embedded_gguf, transformers_dir
from alambic.project import Project
from alambic.prompts import AGENT_PROMPT_NAMES, Prompts
from alambic.release.card import languages, model_card
from alambic.release.gate import decide
from alambic.release.gguf import convert_to_gguf, quantize
from alambic.release.licence import (
    LicenceDuties,
    ModelFacts,
    facts_from_gguf,
    facts_from_name,
    facts_from_transformers,
    licence_duties,
)
from alambic.release.signing import sign_release
from alambic.results import EvalResult, GateOutcome, ReleaseResult, SafetyResult
from alambic.stage import StageReport
from alambic.store import Artifact, Ledger
from alambic.store.ledger import Run

STAGE = "release"


def run(project: Project, console: Console, override: str | None = None) -> StageReport:
    from alambic.agent.build import AGENT_BUILD

    started = time.monotonic()
    ledger, settings = project.ledger, project.config.release
    distill_run = latest_distill_run(ledger)
    student = ledger.artifact(f"student-{distill_run.id}")
    if student is None or not Path(student.path).is_dir():
        raise AlambicError(f"the student of {distill_run.id} is missing from .alambic/artifacts; run distill again")
    if override is not None and not override.strip():
        raise AlambicError("--override: give the reason for releasing anyway")
    safety_run = latest_safety(ledger, distill_run.id)
    safety = safety_run.result(SafetyResult) if safety_run else None
    gate = decide(safety, safety_run.id if safety_run else None, settings.gate, override)
    if gate.outcome == "blocked":
        raise GateBlocked(
            "release blocked by the gate: " + "; ".join(gate.failed) + '. Release anyway with --override "reason".'
        )
    config_hash = stable_hash(
        settings.fingerprint(),
        project.config.project.resolved_system_prompt(),
        override,
        project.config.agent.fingerprint(),
        Prompts(project.root).version(*AGENT_PROMPT_NAMES),
        AGENT_BUILD,
        _agent_quant(project, settings.gguf),  # the GGUF the agent's hand-off is calibrated on
    )
    run_id = f"release-{stable_hash(config_hash, student.sha256, gate.safety_run)[:12]}"
    run = ledger.start_run(run_id, STAGE, config_hash, student.sha256 or "")
    if run.state == "done":
        return StageReport(STAGE, run_id, True, run.result(ReleaseResult))

    duties = licence_duties(
        settings.name or f"{project.config.project.name}-student",
        base_facts(project),
        teacher_facts(project),
    )
    out_dir = project.state_dir / "releases" / run_id
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    # api-only: the weights stay in the project's private artifacts, for `alambic serve` alone.
    weights_dir = out_dir if gate.outcome == "open" else project.artifact_dir(f"serving-{run_id}")
    gguf = _export_weights(project, Path(student.path), weights_dir, duties.name, console)
    if safety is not None:
        shutil.copytree(safety.guard.dir, out_dir / "guard")
    _build_agent(project, out_dir / "agent", Path(gguf[_agent_quant(project, gguf)]), console)
    for filename, text in duties.files.items():
        (out_dir / filename).write_text(text, encoding="utf-8")
    evaluation = latest_evaluation(ledger, distill_run.id)
    lineage = _lineage(ledger, distill_run.id, student)
    (out_dir / "README.md").write_text(
        model_card(
            duties,
            project.config.project.business,
            base_model_name(project),
            lineage["dataset"],
            training_languages(ledger, lineage["dataset"]),
            evaluation,
            safety,
            gate,
            [_document_name(ledger, key) for key in lineage["documents"]],
            distill_run.id,
        ),
        encoding="utf-8",
    )
    manifest = _manifest(out_dir, run_id, duties, gate, lineage, evaluation)
    with console.status("release: signing"):
        sign_release(out_dir, Path(settings.signing_key).expanduser())
    result = ReleaseResult(
        dir=str(out_dir),
        files=manifest["files"],
        gguf=gguf,
        gate=gate,
        name=duties.name,
        licence=duties.licence,
        signed=True,
        agent=str(out_dir / "agent"),
    )
    ledger.add_artifact(
        Artifact(
            f"release-{run_id}",
            run_id,
            "release",
            str(out_dir),
            file_sha256(out_dir / "manifest.json"),
            sum(f["bytes"] for f in manifest["files"]),
            {"name": duties.name, "gate": gate.outcome},
            time.time(),
        ),
        parents=[student.id, *([f"guard-{gate.safety_run}"] if gate.safety_run else [])],
    )
    ledger.finish_run(run_id, result)
    return StageReport(STAGE, run_id, False, result, time.monotonic() - started)


def latest_safety(ledger: Ledger, distill_run_id: str) -> Run | None:
    runs = [
        r
        for r in ledger.runs()
        if r.stage == "safety" and r.state == "done" and r.result(SafetyResult).distill_run == distill_run_id
    ]
    return max(runs, key=lambda r: r.last_chosen) if runs else None


def latest_evaluation(ledger: Ledger, distill_run_id: str) -> EvalResult | None:
    latest = ledger.latest_done("evaluate")
    evaluation = latest.result(EvalResult) if latest else None
    return evaluation if evaluation and evaluation.distill_run == distill_run_id else None


def base_facts(project: Project) -> ModelFacts:
    base = project.config.distill.base
    if base == "embedded":
        return facts_from_gguf(embedded_gguf())
    return facts_from_transformers(transformers_dir(base, project.root, "distill.base"))


def base_model_name(project: Project) -> str:
    base = project.config.distill.base
    return EMBEDDED_REPO if base == "embedded" else base_facts(project).name


def teacher_facts(project: Project) -> ModelFacts:
    section = project.config.teacher
    if section.model == "embedded":
        return facts_from_gguf(embedded_gguf())
    if section.backend == "openai":
        return facts_from_name(section.model)
    path = Path(section.model).expanduser()
    path = path if path.is_absolute() else project.root / path
    if section.backend == "llamacpp" and path.is_file():
        return facts_from_gguf(path)
    return facts_from_transformers(path) if path.is_dir() else facts_from_name(section.model)


def training_languages(ledger: Ledger, dataset: str | None) -> list[str]:
    artifact = ledger.artifact(dataset) if dataset else None
    if artifact is None or not Path(artifact.path).is_file():
        return ["en"]
    questions = []
    with Path(artifact.path).open(encoding="utf-8") as handle:
        for line in handle:
            messages = json.loads(line)["messages"]
            questions += [m["content"] for m in messages if m["role"] == "user"]
    return languages(questions)


def _export_weights(project: Project, student_dir: Path, weights_dir: Path, name: str, console: Console) -> dict:
    settings = project.config.release
    hf_dir, gguf_dir = weights_dir / "hf", weights_dir / "gguf"
    shutil.rmtree(hf_dir, ignore_errors=True)
    shutil.rmtree(gguf_dir, ignore_errors=True)
    with console.status("release: merging and saving safetensors"):
        _save_merged(student_dir, hf_dir, project.config.project.resolved_system_prompt())
    files = {f"{name}-{quant}.gguf": quant for quant in settings.gguf}
    gguf_dir.mkdir(parents=True)
    f16 = gguf_dir / f"{name}-f16.gguf"
    with console.status("release: converting to GGUF f16"):
        convert_to_gguf(hf_dir, f16, "f16")
    for filename, quant in files.items():
        if quant != "f16":
            with console.status(f"release: quantising to {quant}"):
                quantize(f16, gguf_dir / filename, quant)
    if "f16" not in settings.gguf:
        f16.unlink()
    return {quant: str(gguf_dir / filename) for filename, quant in files.items()}


def with_default_system_prompt(template: str, system_prompt: str) -> str:
    """The chat template, made to start with the system prompt the student was trained with
    whenever a client sends none, so that the served model keeps the persona it learnt."""
    literal = json.dumps(system_prompt, ensure_ascii=False)
    prefix = (
        "{%- if not messages or messages[0]['role'] != 'system' -%}"
        f"{{%- set messages = [{{'role': 'system', 'content': {literal}}}] + messages -%}}"
        "{%- endif -%}"
    )
    return prefix + template


def _save_merged(student_dir: Path, hf_dir: Path, system_prompt: str) -> None:
    from alambic.models.hf import load_causal_lm, load_tokenizer

    model = load_causal_lm(student_dir)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(hf_dir, safe_serialization=True)
    tokenizer = load_tokenizer(student_dir)
    tokenizer.chat_template = with_default_system_prompt(tokenizer.chat_template, system_prompt)
    tokenizer.save_pretrained(hf_dir)


def _document_name(ledger: Ledger, key: str) -> str:
    item = ledger.item(key)
    return str(item.payload.get("path", key)) if item else key


def _lineage(ledger: Ledger, distill_run_id: str, student: Artifact) -> dict[str, Any]:
    ancestors = ledger.ancestors(student.id)
    return {
        "student": student.id,
        "distill_run": distill_run_id,
        "dataset": next((p for p in ledger.parents(student.id) if p.startswith("dataset-")), None),
        "documents": sorted(key for key in ancestors if (item := ledger.item(key)) and item.kind == "document"),
    }


def _agent_quant(project: Project, gguf: Collection[str]) -> str:
    """The GGUF the agent is calibrated on: the one served by default, if released."""
    return project.config.serve.quant if project.config.serve.quant in gguf else next(iter(gguf))


def _build_agent(project: Project, agent_dir: Path, gguf: Path, console: Console) -> None:
    from alambic.agent.build import build_agent, report_line
    from alambic.models.embedded import minilm_dir
    from alambic.models.embeddings import Embedder
    from alambic.models.llamacpp import LlamaCppChat

    with console.status("release: indexing the documents and calibrating the agent"):
        model = LlamaCppChat(gguf, n_ctx=project.config.serve.n_ctx, name="student")
        try:
            calibration = asyncio.run(build_agent(project, agent_dir, model, Embedder(minilm_dir())))
        finally:
            model.close()
    report_line(calibration, console)


def _manifest(
    out_dir: Path,
    run_id: str,
    duties: LicenceDuties,
    gate: GateOutcome,
    lineage: dict[str, Any],
    evaluation: EvalResult | None,
) -> dict[str, Any]:
    files = [
        {
            "path": path.relative_to(out_dir).as_posix(),
            "sha256": file_sha256(path),
            "bytes": path.stat().st_size,
        }
        for path in sorted(out_dir.rglob("*"))
        if path.is_file()
    ]
    manifest = {
        "name": duties.name,
        "release": run_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "licence": duties.licence,
        "llama_licence_from": duties.llama_from,
        "gate": gate.model_dump(mode="json"),
        "files": files,
        "lineage": lineage,
        "evaluation": [row.model_dump(mode="json") for row in evaluation.models] if evaluation else None,
    }
    partial = out_dir / "manifest.json.partial"
    partial.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(partial, out_dir / "manifest.json")
    return manifest
