"""serve: the released student behind an OpenAI-compatible API, through llama-cpp-python's server."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from alambic.errors import AlambicError
from alambic.project import Project
from alambic.results import ReleaseResult

if TYPE_CHECKING:
    from fastapi import FastAPI


def released_gguf(project: Project, quant: str) -> Path:
    release = project.ledger.latest_done("release")
    if release is None:
        raise AlambicError("no finished release in this project; run `alambic release` first")
    paths = release.result(ReleaseResult).gguf
    if quant not in paths:
        raise AlambicError(f"serve.quant: the release has no {quant} GGUF (it has {', '.join(sorted(paths))})")
    path = Path(paths[quant])
    if not path.is_file():
        raise AlambicError(f"{path}: released GGUF is missing; run `alambic release` again")
    return path


def create_app(gguf: Path, model_alias: str, n_ctx: int) -> FastAPI:
    from llama_cpp.server.app import create_app as llama_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    return llama_app(
        server_settings=ServerSettings(),
        model_settings=[ModelSettings(model=str(gguf), model_alias=model_alias, n_ctx=n_ctx, verbose=False)],
    )


def serve_gguf(gguf: Path, alias: str, host: str, port: int, n_ctx: int, console: Console) -> None:
    import uvicorn

    app = create_app(gguf, alias, n_ctx)
    console.print(f"serving {alias} ({gguf.name}) at http://{host}:{port}/v1  (Ctrl-C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def serve(project: Project, console: Console, host: str | None, port: int | None, quant: str | None) -> None:
    settings = project.config.serve
    gguf = released_gguf(project, quant or settings.quant)
    alias = f"{project.config.project.name}-student"
    serve_gguf(gguf, alias, host or settings.host, port or settings.port, settings.n_ctx, console)
