"""A user's project: a folder with alambic.toml, docs/ and the .alambic/ state (ledger and artifacts)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

from alambic.config import Config, load_config
from alambic.documents import Document, read_documents
from alambic.errors import AlambicError
from alambic.store import Ledger

CONFIG_FILE = "alambic.toml"
STATE_DIR = ".alambic"


@dataclass
class Project:
    root: Path
    config: Config

    @classmethod
    def open(cls, root: Path, preset: str | None = None) -> Project:
        root = root.resolve()
        if not root.is_dir():
            raise AlambicError(f"{root}: project folder does not exist")
        return cls(root, load_config(root / CONFIG_FILE, preset))

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.state_dir / "ledger.sqlite")

    def artifact_dir(self, *parts: str) -> Path:
        path = self.state_dir.joinpath("artifacts", *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def docs_dir(self) -> Path:
        return self.root / self.config.project.docs

    def documents(self) -> list[Document]:
        """Every document under docs/, converted (conversions are kept under .alambic/converted/), in a stable
        order; the first that cannot be read stops it with a one-line error naming the file."""
        return read_documents(self.docs_dir, self.state_dir / "converted")

    def close(self) -> None:
        if "ledger" in self.__dict__:
            self.ledger.close()


def examples() -> list[str]:
    return sorted(entry.name for entry in resources.files("alambic.examples").iterdir() if entry.is_dir())


def init_project(target: Path, example: str | None) -> Path:
    if target.exists() and any(target.iterdir()):
        raise AlambicError(f"{target}: folder exists and is not empty")
    if example is None:
        target.mkdir(parents=True, exist_ok=True)
        (target / "docs").mkdir()
        (target / CONFIG_FILE).write_text(
            f'[project]\nname = "{target.name}"\nbusiness = "{target.name}"\n', encoding="utf-8"
        )
        return target
    if example not in examples():
        raise AlambicError(f"unknown example {example!r}; choose from {', '.join(examples())}")
    source = resources.files("alambic.examples") / example
    with resources.as_file(source) as source_path:
        shutil.copytree(source_path, target, dirs_exist_ok=True)
    os.utime(target / CONFIG_FILE)
    return target
