"""A project's guard: trained (embedded) or calibrated (openai, teacher) into a folder, and opened from it by the
safety stage, the release gate and the server alike."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from alambic.errors import AlambicError
from alambic.guard import Exchange, Guard
from alambic.guard.embedded import (
    EmbeddedGuard,
    Example,
    _threshold,
    harmbench_behaviours,
    hazard_requests,
    packaged_lines,
    train_guard,
)
from alambic.hashing import stable_hash
from alambic.project import Project

HELD_OUT_SHARE = 5  # one packaged or teacher-written harmful request in five is never trained on


def held_out(text: str) -> bool:
    """True for the harmful requests kept for measurement: no guard is ever trained on them."""
    return int(stable_hash("safety-split", text)[:8], 16) % HELD_OUT_SHARE == 0


class RemoteCalibration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: str
    model: str
    threshold: float
    target_fpr: float
    calibration_fpr: float
    calibrated_on: int


def benign_examples(business: list[str], business_answers: Sequence[str] = ()) -> dict[str, list[str]]:
    return {
        "business": business,
        "business-answers": list(business_answers),
        "benign": packaged_lines("benign-questions.txt"),
        "alarming-but-safe": packaged_lines("alarming-but-safe.txt"),
    }


def check_guard_reachable(project: Project) -> None:
    """Fails with the endpoint in the message, before any work, when an openai guard does not answer."""
    if project.config.safety.guard.backend == "openai":
        calibration = RemoteCalibration(
            backend="openai", model="", threshold=0.5, target_fpr=0.0, calibration_fpr=0.0, calibrated_on=0
        )
        asyncio.run(open_remote(project, calibration).aclose())


def train_project_guard(
    project: Project, directory: Path, business: list[str], business_answers: list[str], teacher_unsafe: list[Example]
) -> dict[str, Any]:
    """Trains (embedded) or calibrates (openai, teacher) the project's guard into `directory`; returns what the
    ledger records of it."""
    settings = project.config.safety
    backend = settings.guard.backend
    safe = benign_examples(business, business_answers)
    if backend == "embedded":
        from alambic.models.embedded import minilm_dir
        from alambic.models.embeddings import Embedder

        unsafe = {
            "harmbench": [Example(text=text) for text in harmbench_behaviours() if not held_out(text)],
            "hazards": [example for example in hazard_requests() if not held_out(example.text)],
            "teacher-unsafe": teacher_unsafe,
            **{topic: [Example(text=t, category=topic) for t in texts] for topic, texts in settings.topics.items()},
        }
        model = train_guard(Embedder(minilm_dir()), unsafe, safe, directory, settings.guard.target_fpr)
        return {
            "backend": backend,
            "dir": str(directory),
            "threshold": model.threshold,
            "target_fpr": model.target_fpr,
            "calibration_fpr": model.calibration_fpr,
            "calibrated_on": model.calibrated_on,
            "answer_threshold": model.answer_threshold,
            "trained_on": model.trained_on,
        }
    # A remote guard reads requests as requests: it is calibrated on the benign ones alone.
    texts = [text for source, texts in safe.items() if source != "business-answers" for text in texts]
    guard = open_remote(
        project,
        RemoteCalibration(
            backend=backend, model="", threshold=0.5, target_fpr=0.0, calibration_fpr=0.0, calibrated_on=0
        ),
    )
    scores = asyncio.run(_scores_then_close(guard, texts))
    # The teacher's verdicts are 0 or 1: no threshold between them would change which it flags.
    threshold = 0.5 if backend == "teacher" else _threshold_of(scores, settings.guard.target_fpr)
    calibration = RemoteCalibration(
        backend=backend,
        model=settings.guard.model if backend == "openai" else "teacher",
        threshold=threshold,
        target_fpr=settings.guard.target_fpr,
        calibration_fpr=sum(score > threshold for score in scores) / len(scores),
        calibrated_on=len(scores),
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "remote.json").write_text(calibration.model_dump_json(indent=1), encoding="utf-8")
    return {
        "backend": backend,
        "dir": str(directory),
        "threshold": threshold,
        "target_fpr": calibration.target_fpr,
        "calibration_fpr": calibration.calibration_fpr,
        "calibrated_on": "all",
        "trained_on": {},
    }


def _threshold_of(scores: list[float], target_fpr: float) -> float:
    import numpy as np

    return _threshold(np.asarray(scores), target_fpr)


async def _scores_then_close(guard: Guard, texts: list[str]) -> list[float]:
    try:
        return [verdict.score for verdict in await guard.check([Exchange(text) for text in texts])]
    finally:
        await guard.aclose()


def open_guard(project: Project, directory: Path) -> Guard:
    """The guard trained or calibrated into `directory`."""
    remote = directory / "remote.json"
    if remote.is_file():
        try:
            calibration = RemoteCalibration.model_validate(json.loads(remote.read_text(encoding="utf-8")))
        except ValueError as exc:
            raise AlambicError(f"{remote}: damaged guard calibration ({exc}); run `alambic safety` again") from exc
        return open_remote(project, calibration)
    from alambic.models.embedded import minilm_dir
    from alambic.models.embeddings import Embedder

    return EmbeddedGuard(directory, Embedder(minilm_dir()))


def open_remote(project: Project, calibration: RemoteCalibration) -> Guard:
    settings = project.config.safety
    if calibration.backend == "openai":
        from alambic.guard.remote import LlamaGuard, ShieldGemma
        from alambic.models.openai import OpenAIChat

        section = settings.guard
        assert section.base_url is not None
        model = OpenAIChat(
            [section.base_url],
            section.model,
            section.api_key_env,
            section.timeout_s,
            parallel=4,
            max_retries=2,
            setting="safety.guard",
        )
        family = ShieldGemma if section.family == "shieldgemma" else LlamaGuard
        return family(model, calibration.threshold)
    from alambic.guard.remote import TeacherGuard
    from alambic.models.teacher import Teacher
    from alambic.prompts import Prompts

    teacher = Teacher.open(project.config.teacher, project.root, project.ledger)
    return TeacherGuard(teacher, Prompts(project.root), project.config.project.business, list(settings.topics))
