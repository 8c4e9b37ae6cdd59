"""alambic.toml: one pydantic model per [section], validated at load time (unknown keys are errors)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alambic.errors import AlambicError
from alambic.hashing import stable_hash


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def fingerprint(self) -> str:
        return stable_hash(self.model_dump(mode="json"))


class ProjectSection(Section):
    name: str = "my-project"
    business: str = Field("our business", description="Who the assistant speaks for; used in prompts.")
    system_prompt: str = Field(
        "You are the customer support assistant of {business}. Answer briefly and politely.",
        description="System prompt the student is trained and served with. {business} is filled in.",
    )
    docs: str = Field("docs", description="Folder of the documents, relative to the project.")

    def resolved_system_prompt(self) -> str:
        return self.system_prompt.replace("{business}", self.business)


class TeacherSection(Section):
    backend: Literal["llamacpp", "openai", "hf"] = "llamacpp"
    model: str = Field("embedded", description="'embedded', a GGUF path (llamacpp), a model dir (hf) or a name.")
    base_url: str | list[str] | None = Field(
        None, description="OpenAI-compatible endpoint(s), e.g. http://host:8000/v1; a list load-balances replicas."
    )
    api_key_env: str | None = Field(None, description="Name of the environment variable holding the API key.")
    timeout_s: float = Field(120.0, gt=0)
    concurrency: int = Field(16, ge=1, le=4096, description="Requests in flight, over all replicas.")
    max_retries: int = Field(6, ge=0, le=100)
    backoff_s: float = Field(0.5, gt=0, description="First retry waits up to this long; each next one doubles.")
    price_prompt_per_m: float = Field(0.0, ge=0, description="Price per million prompt tokens, for `status`.")
    price_completion_per_m: float = Field(0.0, ge=0, description="Price per million completion tokens.")
    n_ctx: int = Field(2048, ge=256)
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra fields sent with every openai request (server-specific sampling, e.g. top_k).",
    )

    @model_validator(mode="after")
    def _openai_needs_url(self) -> TeacherSection:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs base_url")
        return self

    def base_urls(self) -> list[str]:
        if self.base_url is None:
            return []
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)


class SynthSection(Section):
    chunk_chars: int = Field(900, ge=200, le=20000)
    questions_per_chunk: int = Field(5, ge=1, le=50)
    question_attempts: int = Field(3, ge=1, le=10, description="Ask again (new seed) while too few questions.")
    max_chunks: int | None = Field(None, ge=1)
    heldout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_answer_tokens: int = Field(160, ge=8)
    min_answer_words: int = Field(4, ge=1)
    seed: int = 0


class DistillSection(Section):
    base: str = Field("embedded", description="'embedded' (SmolLM2-135M-Instruct) or a local transformers model dir.")
    prune_layers: int | None = Field(8, ge=1, description="Keep this many layers, evenly spaced; null keeps all.")
    adapter: Literal["full", "lora"] = "full"
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    epochs: float = Field(6.0, gt=0)
    learning_rate: float = Field(3e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    max_seq_len: int = Field(384, ge=32)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    checkpoint_every: int = Field(20, ge=1)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    seed: int = 0


class EvaluateSection(Section):
    max_questions: int = Field(32, ge=1)
    max_new_tokens: int = Field(96, ge=8)


class ReleaseSection(Section):
    gguf: list[Literal["f16", "q8_0", "q4_k_m"]] = Field(default_factory=lambda: ["f16", "q4_k_m"])


class ServeSection(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    quant: Literal["f16", "q8_0", "q4_k_m"] = "q4_k_m"
    n_ctx: int = Field(2048, ge=256)


class Config(Section):
    project: ProjectSection = Field(default_factory=ProjectSection)
    teacher: TeacherSection = Field(default_factory=TeacherSection)
    synth: SynthSection = Field(default_factory=SynthSection)
    distill: DistillSection = Field(default_factory=DistillSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    release: ReleaseSection = Field(default_factory=ReleaseSection)
    serve: ServeSection = Field(default_factory=ServeSection)


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "synth": {"questions_per_chunk": 2, "max_chunks": 12, "max_answer_tokens": 96},
        "distill": {"epochs": 1.0, "checkpoint_every": 10},
        "evaluate": {"max_questions": 6, "max_new_tokens": 48},
        "release": {"gguf": ["f16"]},
        "serve": {"quant": "f16"},
    },
}


def load_config(path: Path, preset: str | None = None) -> Config:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise AlambicError(f"{path}: not found (run `alambic init` first, or pass --project)") from exc
    except UnicodeDecodeError as exc:
        raise AlambicError(f"{path}: not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise AlambicError(f"{path}: invalid TOML: {exc}") from exc
    if preset is not None:
        if preset not in PRESETS:
            raise AlambicError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        for section, overrides in PRESETS[preset].items():
            raw.setdefault(section, {}).update(overrides)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise AlambicError(f"{path}: [{key}] {error['msg']}{more}") from exc
