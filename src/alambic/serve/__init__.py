"""serve: the released student and its agent behind alambic's own OpenAI-compatible server: API keys, limits,
the guard on requests and answers (always, for an api-only release), metrics and the /ui page."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from alambic.errors import AlambicError
from alambic.project import Project
from alambic.results import ReleaseResult
from alambic.serve.keys import live_keys

if TYPE_CHECKING:
    from alambic.agent.loop import Agent
    from alambic.models.llamacpp import LlamaCppChat
    from alambic.serve.app import Server
    from alambic.serve.guarded import ServedGuard


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


def serve_gguf(gguf: Path, alias: str, host: str, port: int, n_ctx: int, console: Console) -> None:
    """A bare GGUF through llama-cpp-python's own server: for a teacher on loopback, not for customers."""
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    app = create_app(
        server_settings=ServerSettings(),
        model_settings=[ModelSettings(model=str(gguf), model_alias=alias, n_ctx=n_ctx, verbose=False)],
    )
    console.print(f"serving {alias} ({gguf.name}) at http://{host}:{port}/v1  (Ctrl-C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def served_guard(project: Project, release: ReleaseResult) -> ServedGuard:
    from alambic.guard.loading import open_guard
    from alambic.serve.guarded import ServedGuard

    guard_dir = Path(release.dir) / "guard"
    if not guard_dir.is_dir():
        raise AlambicError(
            f"{release.dir}: the release has no guard; run `alambic safety` and `alambic release`, "
            "or set serve.guard = false"
        )
    settings = project.config.safety
    return ServedGuard(
        open_guard(project, guard_dir),
        settings.resolved_refusal_message(project.config.project.business),
        project.ledger,
        settings.guard.check_answers,
        settings.log_requests,
    )


def served_agent(project: Project, agent_dir: Path, student: LlamaCppChat) -> Agent:
    from alambic.agent.build import open_agent
    from alambic.models import open_teacher
    from alambic.models.embedded import minilm_dir
    from alambic.models.embeddings import Embedder

    teacher = open_teacher(project.config.teacher, project.root) if project.config.agent.cascade else None
    return open_agent(project, agent_dir, student, Embedder(minilm_dir()), teacher)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(project: Project, host: str, auth: bool) -> None:
    """Refuse to serve without keys anywhere but loopback, and without any key at all unless told to."""
    if not auth and not is_loopback(host):
        raise AlambicError(f"--no-auth is allowed only on loopback (127.0.0.1), not on {host}")
    if auth and not live_keys(project.ledger):
        raise AlambicError(
            "no API key: create one with `alambic keys create NAME`, or serve on loopback with --no-auth"
        )


def build_server(project: Project, quant: str, guard: bool, auth: bool) -> Server:
    import torch

    from alambic.models.llamacpp import LlamaCppChat
    from alambic.serve.app import ServedModels, Server, ServerOptions

    # MiniLM (guard, retrieval) reads a sentence in about 10 ms on one thread; with more, torch's OpenMP threads
    # spin after each call beside llama.cpp's and made every answer 3.4 times slower here (0.44 s against 0.13 s).
    torch.set_num_threads(1)
    release = latest_release(project)
    api_only = release.gate is not None and release.gate.outcome == "api-only"
    if api_only and not guard:
        raise AlambicError("this release is api-only: it may be served only with its guard (serve.guard = true)")
    settings = project.config.serve
    gguf = released_gguf(project, quant)
    alias = release.name or f"{project.config.project.name}-student"
    student = LlamaCppChat(gguf, n_ctx=settings.n_ctx, name=alias, own_thread=True)
    agent = served_agent(project, Path(release.agent), student) if release.agent is not None else None
    models = ServedModels(student, alias, agent, served_guard(project, release) if guard else None)
    options = ServerOptions(settings.limits, settings.n_ctx, auth, settings.log_content, settings.cors_origins)
    return Server(models, options, project.ledger, project.root)


def serve(
    project: Project,
    console: Console,
    host: str | None,
    port: int | None,
    quant: str | None,
    guard: bool | None,
    auth: bool = True,
) -> None:
    import uvicorn

    from alambic.serve.app import create_app

    settings = project.config.serve
    host, port = host or settings.host, port or settings.port
    check_exposure(project, host, auth)
    server = build_server(project, quant or settings.quant, settings.guard if guard is None else guard, auth)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("alambic.serve").addHandler(handler)
    logging.getLogger("alambic.serve").setLevel(logging.INFO)
    state = "guarded" if server.models.guard else "UNGUARDED"
    access = "API keys" if auth else "NO AUTH, loopback only"
    if not is_loopback(host):
        console.print(
            f"[yellow]listening on {host}: reachable from other machines. Every request needs a key; "
            "put TLS in front of it (a reverse proxy).[/yellow]"
        )
    console.print(
        f"serving {', '.join(server.models.names())} ({server.models.student.path.name}, {state}, {access}) at "
        f"http://{host}:{port}/v1, the page at /ui  (Ctrl-C to stop)"
    )
    uvicorn.run(
        create_app(server),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=int(settings.limits.request_timeout_s),
    )


def proxy(project: Project, console: Console, teacher_url: str | None, host: str, port: int, auth: bool = True) -> None:
    """Serve the capture proxy in front of the teacher (the project's own, unless another URL is given)."""
    import os

    import uvicorn

    from alambic.serve.proxy import CaptureProxy, create_proxy_app

    check_exposure(project, host, auth)
    teacher = project.config.teacher
    url = teacher_url or (teacher.base_urls() or [None])[0]
    if not url:
        raise AlambicError("--teacher: give the teacher's URL (…/v1), or set teacher.base_url")
    upstream_key = os.environ.get(teacher.api_key_env) if teacher.api_key_env else None
    capture = CaptureProxy(url, project.ledger, auth, upstream_key, teacher.timeout_s)
    console.print(f"capturing traffic to {url} at http://{host}:{port}/v1  (Ctrl-C to stop)")
    uvicorn.run(create_proxy_app(capture), host=host, port=port, log_level="warning")
