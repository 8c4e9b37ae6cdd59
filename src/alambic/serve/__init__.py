"""serve: the released student behind an OpenAI-compatible API, through llama-cpp-python's server, with the
guard on requests and answers (always, for an api-only release)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from alambic.errors import AlambicError
from alambic.project import Project
from alambic.results import ReleaseResult

if TYPE_CHECKING:
    from fastapi import FastAPI

    from alambic.serve.agent_route import AgentRoute
    from alambic.serve.guarded import GuardedChat


def latest_release(project: Project) -> ReleaseResult:
    release = project.ledger.latest_done("release")
    if release is None:
        raise AlambicError("no finished release in this project; run `alambic release` first")
    return release.result(ReleaseResult)


def released_gguf(project: Project, quant: str) -> Path:
    paths = latest_release(project).gguf
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


def guard_middleware(project: Project, release: ReleaseResult) -> GuardedChat:
    from alambic.guard.loading import open_guard
    from alambic.serve.guarded import GuardedChat

    guard_dir = Path(release.dir) / "guard"
    if not guard_dir.is_dir():
        raise AlambicError(
            f"{release.dir}: the release has no guard; run `alambic safety` and `alambic release`, "
            "or set serve.guard = false"
        )
    settings = project.config.safety
    return GuardedChat(
        open_guard(project, guard_dir),
        settings.resolved_refusal_message(project.config.project.business),
        project.ledger,
        settings.guard.check_answers,
        settings.log_requests,
    )


def agent_route(project: Project, agent_dir: Path, gguf: Path, alias: str) -> AgentRoute:
    from alambic.agent.build import open_agent
    from alambic.models import open_teacher
    from alambic.models.embedded import minilm_dir
    from alambic.models.embeddings import Embedder
    from alambic.models.llamacpp import LlamaCppChat
    from alambic.serve.agent_route import AgentRoute

    model = LlamaCppChat(gguf, n_ctx=project.config.serve.n_ctx, name="agent")
    teacher = open_teacher(project.config.teacher, project.root) if project.config.agent.cascade else None
    return AgentRoute(open_agent(project, agent_dir, model, Embedder(minilm_dir()), teacher), alias)


def guarded_app(project: Project, quant: str, guard: bool) -> tuple[FastAPI, str, Path, bool]:
    """The app, the model's alias, its GGUF and whether it is guarded."""
    release = latest_release(project)
    api_only = release.gate is not None and release.gate.outcome == "api-only"
    if api_only and not guard:
        raise AlambicError("this release is api-only: it may be served only with its guard (serve.guard = true)")
    gguf = released_gguf(project, quant)
    alias = release.name or f"{project.config.project.name}-student"
    app = create_app(gguf, alias, project.config.serve.n_ctx)
    from starlette.middleware.base import BaseHTTPMiddleware

    if release.agent is not None:  # added first, so the guard (added last, outermost) sees the agent's answers
        app.add_middleware(BaseHTTPMiddleware, dispatch=agent_route(project, Path(release.agent), gguf, alias))
    if guard:
        app.add_middleware(BaseHTTPMiddleware, dispatch=guard_middleware(project, release))
    return app, alias, gguf, guard


def serve(
    project: Project, console: Console, host: str | None, port: int | None, quant: str | None, guard: bool | None
) -> None:
    import uvicorn

    settings = project.config.serve
    app, alias, gguf, guarded = guarded_app(
        project, quant or settings.quant, settings.guard if guard is None else guard
    )
    host, port = host or settings.host, port or settings.port
    state = "guarded" if guarded else "UNGUARDED"
    models = "models student and agent" if latest_release(project).agent else "model student"
    console.print(f"serving {alias} ({gguf.name}, {state}; {models}) at http://{host}:{port}/v1  (Ctrl-C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
