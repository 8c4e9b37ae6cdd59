"""release: the student as safetensors (LoRA merged) and GGUF, with a manifest of hashes and lineage."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from alambic.errors import AlambicError
from alambic.hashing import file_sha256, stable_hash
from alambic.project import Project
from alambic.release.gguf import convert_to_gguf, quantize
from alambic.results import EvalResult, ReleaseResult
from alambic.stage import StageReport
from alambic.store import Artifact, Ledger

STAGE = "release"


def run(project: Project, console: Console) -> StageReport:
    started = time.monotonic()
    ledger, settings = project.ledger, project.config.release
    distill_run = ledger.latest_done("distill")
    if distill_run is None:
        raise AlambicError("no finished distill run in this project; run `alambic distill` first")
    student = ledger.artifact(f"student-{distill_run.id}")
    if student is None or not Path(student.path).is_dir():
        raise AlambicError(f"the student of {distill_run.id} is missing from .alambic/artifacts; run distill again")
    config_hash = stable_hash(settings.fingerprint(), project.config.project.resolved_system_prompt())
    run_id = f"release-{stable_hash(config_hash, student.sha256)[:12]}"
    run = ledger.start_run(run_id, STAGE, config_hash, student.sha256 or "")
    if run.state == "done":
        return StageReport(STAGE, run_id, True, run.result(ReleaseResult))

    out_dir = project.state_dir / "releases" / run_id
    shutil.rmtree(out_dir, ignore_errors=True)
    hf_dir, gguf_dir = out_dir / "hf", out_dir / "gguf"
    name = f"{project.config.project.name}-student"
    with console.status("release: merging and saving safetensors"):
        _save_merged(Path(student.path), hf_dir, project.config.project.resolved_system_prompt())
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
    manifest = _manifest(ledger, run_id, name, out_dir, distill_run.id, student)
    result = ReleaseResult(
        dir=str(out_dir),
        files=manifest["files"],
        gguf={q: str(gguf_dir / f) for f, q in files.items()},
    )
    ledger.add_artifact(
        Artifact(
            f"release-{run_id}",
            run_id,
            "release",
            str(out_dir),
            file_sha256(out_dir / "manifest.json"),
            sum(f["bytes"] for f in manifest["files"]),
            {"name": name},
            time.time(),
        ),
        parents=[student.id],
    )
    ledger.finish_run(run_id, result)
    return StageReport(STAGE, run_id, False, result, time.monotonic() - started)


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


def _manifest(
    ledger: Ledger, run_id: str, name: str, out_dir: Path, distill_run_id: str, student: Artifact
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
    ancestors = ledger.ancestors(student.id)
    documents = sorted(key for key in ancestors if (item := ledger.item(key)) and item.kind == "document")
    latest_evaluation = ledger.latest_done("evaluate")
    evaluation = latest_evaluation.result(EvalResult) if latest_evaluation else None
    manifest = {
        "name": name,
        "release": run_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
        "lineage": {
            "student": student.id,
            "distill_run": distill_run_id,
            "dataset": next((p for p in ledger.parents(student.id) if p.startswith("dataset-")), None),
            "documents": documents,
        },
        "evaluation": (
            [row.model_dump(mode="json") for row in evaluation.models]
            if evaluation and evaluation.distill_run == distill_run_id
            else None
        ),
    }
    partial = out_dir / "manifest.json.partial"
    partial.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(partial, out_dir / "manifest.json")
    return manifest
