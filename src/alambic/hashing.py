import hashlib
import json
from pathlib import Path
from typing import Any


def stable_hash(*parts: Any) -> str:
    """Hash of JSON-serialisable parts, stable across runs and machines."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def dir_sha256(path: Path) -> str:
    """One digest for a folder: the hash of every file's relative path and sha256."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return stable_hash([(p.relative_to(path).as_posix(), file_sha256(p)) for p in files])


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def files_sha256(root: Path, relpaths: list[str]) -> list[str]:
    """The sha256 of each file named relative to `root` ("missing" where there is none): what changes when
    a user replaces an input file."""
    return [file_sha256(root / p) if (root / p).is_file() else "missing" for p in relpaths]
