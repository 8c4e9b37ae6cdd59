"""Prompts are Jinja files in this folder; a project overrides any of them in its own prompts/ folder. Every
stage that asks the teacher (synth's recipes, curate's judge) renders them through `Prompts`."""

from __future__ import annotations

from pathlib import Path

import jinja2

from alambic.hashing import stable_hash
from alambic.models.base import Message

# Prompts that only measure (the guard, refusal judging, the over-refusal questions) and never write training data:
# synth's runs must not be redone when they change.
MEASURING_PROMPTS = ("guard-judge.", "refusal-judge.", "alarming-question.", "generic-reply.")
# Prompts the agent's own model reads (distill trains on them, serve renders them); the teacher never sees them.
AGENT_PROMPTS = ("agent.", "agent-tool.")
AGENT_PROMPT_NAMES = ("agent.user", "agent-tool.system", "agent-tool.user")


class Prompts:
    def __init__(self, project_root: Path) -> None:
        self._loader = jinja2.ChoiceLoader(
            [jinja2.FileSystemLoader(project_root / "prompts"), jinja2.FileSystemLoader(Path(__file__).parent)]
        )
        self._env = jinja2.Environment(
            loader=self._loader,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            autoescape=False,
        )

    def render(self, name: str, **values: object) -> str:
        return self._env.get_template(f"{name}.j2").render(**values).strip()

    def messages(self, prompt: str, **values: object) -> list[Message]:
        """The system and user messages of a prompt pair `<prompt>.system.j2` and `<prompt>.user.j2`."""
        return [
            {"role": "system", "content": self.render(f"{prompt}.system", **values)},
            {"role": "user", "content": self.render(f"{prompt}.user", **values)},
        ]

    def fingerprint(self) -> str:
        """Changes whenever any template that writes training data, packaged or the project's, changes."""
        unused_by_synth = MEASURING_PROMPTS + AGENT_PROMPTS
        names = sorted(
            name for name in set(self._env.list_templates(extensions=["j2"])) if not name.startswith(unused_by_synth)
        )
        return self.version(*(name.removesuffix(".j2") for name in names))

    def version(self, *names: str) -> str:
        """Changes whenever the text of any of these templates changes (so their outputs are redone)."""
        sources = [self._loader.get_source(self._env, f"{name}.j2")[0] for name in names]
        return stable_hash(sources)[:12]
