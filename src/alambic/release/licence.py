"""Licence duties from what was used: the base the student was cut from and the teacher that wrote its data.

A model's licence is read from its metadata (a GGUF's general.license and base models, a transformers folder's
model card front matter), not from its name: SmolLM2 has the llama architecture and TinyLlama a llama name, and
both are Apache-2.0. Only a model known by nothing but its name (a remote endpoint) is judged by the name."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

LLAMA_NAME = re.compile(r"(?:^|[/_\-\s])(?:meta-)?llama[-_ ]?\d", re.IGNORECASE)
LLAMA_NOTICE = (
    "Llama 3.1 is licensed under the Llama 3.1 Community License, Copyright © Meta Platforms, Inc. "
    "All Rights Reserved.\n"
)
LLAMA_USE_POLICY = "https://llama.meta.com/llama3_1/use-policy"


@dataclass
class ModelFacts:
    name: str
    licence: str | None = None  # an SPDX id or a Hugging Face licence name (apache-2.0, llama3.1, ...)
    base_models: list[str] = field(default_factory=list)
    source: str = "metadata"  # "metadata" or "name"

    @property
    def is_llama(self) -> bool:
        if self.licence is not None:
            return self.licence.lower().replace(" ", "").startswith("llama")
        if any("meta-llama" in base.lower() or LLAMA_NAME.search(base) for base in self.base_models):
            return True
        return self.source == "name" and bool(LLAMA_NAME.search(self.name))


def facts_from_gguf(path: Path) -> ModelFacts:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def text(key: str) -> str | None:
        found = reader.fields.get(key)
        if found is None or not found.data:
            return None
        return bytes(found.parts[found.data[0]]).decode("utf-8", "replace")

    bases = []
    for index in range(8):
        base = text(f"general.base_model.{index}.repo_url") or text(f"general.base_model.{index}.name")
        if base:
            bases.append(base)
    name = text("general.name") or text("general.basename") or path.stem
    return ModelFacts(name, text("general.license"), bases)


def facts_from_transformers(directory: Path) -> ModelFacts:
    """From the model card's front matter (license, base_model) where there is one, else config.json's name."""
    front = _front_matter(directory / "README.md")
    name = str(front.get("model_name") or directory.name)
    config = directory / "config.json"
    if config.is_file():
        name = json.loads(config.read_text(encoding="utf-8")).get("_name_or_path") or name
    bases = front.get("base_model") or []
    licence = front.get("license")
    return ModelFacts(str(name), str(licence) if licence else None, [bases] if isinstance(bases, str) else list(bases))


def facts_from_name(name: str) -> ModelFacts:
    return ModelFacts(name, None, [], source="name")


def _front_matter(readme: Path) -> dict:
    """The model card's YAML front matter (huggingface_hub reads it as the Hub does)."""
    from huggingface_hub.repocard import metadata_load

    return (metadata_load(readme) or {}) if readme.is_file() else {}


@dataclass
class LicenceDuties:
    licence: str  # what the model card's `license` says
    name: str  # the release name, "Llama"-prefixed where the Llama licence requires it
    files: dict[str, str]  # file name -> text, shipped with the release
    card_lines: list[str]  # what the model card must say
    llama_from: list[str]  # which of base and teacher brought the Llama licence


def licence_duties(name: str, base: ModelFacts, teacher: ModelFacts) -> LicenceDuties:
    llama_from = [role for role, facts in (("base", base), ("teacher", teacher)) if facts.is_llama]
    if llama_from:
        licence_text = (resources.files("alambic.release") / "data" / "LLAMA-3.1-LICENSE.txt").read_text("utf-8")
        return LicenceDuties(
            licence="llama3.1",
            name=name if name.lower().startswith("llama") else f"Llama-{name}",
            files={"LICENSE": licence_text, "NOTICE": LLAMA_NOTICE},
            card_lines=[
                "**Built with Llama.**",
                f"This model was made with Llama 3.1 ({' and '.join(llama_from)}), so the Llama 3.1 Community "
                "License applies (LICENSE, NOTICE). Its use must follow the Llama 3.1 Acceptable Use Policy: "
                f"{LLAMA_USE_POLICY}. Above 700 million monthly active users, a licence from Meta is required.",
            ],
            llama_from=llama_from,
        )
    licence = base.licence or "other"
    return LicenceDuties(
        licence=licence,
        name=name,
        files={},
        card_lines=[f"Licensed as its base model, {base.name}: {licence}."],
        llama_from=[],
    )
