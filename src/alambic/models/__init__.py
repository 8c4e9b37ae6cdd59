"""One interface for teachers and students, with openai, llamacpp and hf backends."""

from __future__ import annotations

from pathlib import Path

from alambic.config import TeacherSection
from alambic.errors import AlambicError
from alambic.hashing import stable_hash
from alambic.models.base import ChatModel, Completion, Message, Sampling
from alambic.models.embedded import EMBEDDED_NAME, embedded_gguf, embedded_hf_dir

__all__ = ["ChatModel", "Completion", "Message", "Sampling", "open_teacher", "teacher_id"]


def teacher_id(section: TeacherSection) -> str:
    """What identifies the teacher's outputs: a different id means different answers."""
    model = EMBEDDED_NAME if section.model == "embedded" else section.model
    if section.backend == "openai" and section.extra_body:
        return f"openai:{model}:{stable_hash(section.extra_body)[:8]}"
    return f"{section.backend}:{model}"


def open_teacher(section: TeacherSection, project_root: Path, logprobs: bool = False) -> ChatModel:
    """The teacher; `logprobs` if its answers' top-k logprobs will be asked for (llama.cpp must keep all logits)."""
    if section.backend == "openai":
        from alambic.models.openai import OpenAIChat

        model = EMBEDDED_NAME if section.model == "embedded" else section.model
        return OpenAIChat(
            section.base_urls(),
            model,
            section.api_key_env,
            section.timeout_s,
            section.concurrency,
            section.extra_body,
            section.max_retries,
            section.backoff_s,
            json_mode=section.json_mode,
            stream=section.stream,
        )
    if section.backend == "llamacpp":
        from alambic.models.llamacpp import LlamaCppChat

        path = embedded_gguf() if section.model == "embedded" else _local_path(section.model, project_root)
        name = EMBEDDED_NAME if section.model == "embedded" else None
        return LlamaCppChat(path, section.n_ctx, name=name, logits_all=logprobs)
    from alambic.models.hf import HFChat

    if logprobs:
        raise AlambicError("synth.logprobs: the hf teacher backend cannot return logprobs; use llamacpp or openai")
    path = embedded_hf_dir() if section.model == "embedded" else _local_path(section.model, project_root)
    return HFChat.from_dir(path)


def _local_path(value: str, project_root: Path) -> Path:
    path = Path(value).expanduser()
    path = path if path.is_absolute() else project_root / path
    if not path.exists():
        raise AlambicError(f"teacher.model: {path} does not exist")
    return path
