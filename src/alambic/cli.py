"""The alambic command line: each verb maps to one stage's `run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from alambic import __version__
from alambic.errors import AlambicError, GateBlocked
from alambic.project import Project, examples, init_project
from alambic.stage import StageReport

app = typer.Typer(
    help="Distil a large open teacher into your own small, private, specialised model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
# Rich falls back to 80 columns when piped (e.g. `make demo | tee`); the summary table needs more.
output = Console(width=None if Console().is_terminal else 120)

ProjectOption = Annotated[
    Path,
    typer.Option("--project", "-p", help="Project folder (holds alambic.toml).", show_default="current folder"),
]
PresetOption = Annotated[str | None, typer.Option(help="Named preset of settings, e.g. 'quick' (a ~10 minute loop).")]


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a user's mistake as one line and exit non-zero, instead of a traceback."""
    try:
        yield
    except AlambicError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(3 if isinstance(exc, GateBlocked) else 2) from None
    except KeyboardInterrupt:
        console.print("interrupted; run the same command again to continue where it stopped")
        raise typer.Exit(130) from None


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _open_project(root: Path, preset: str | None) -> Project:
    """The project, its ledger brought up to what today's stages read if an older alambic wrote it."""
    from alambic.synth.selection import record_missing_selections

    project = Project.open(root, preset)
    record_missing_selections(project.ledger)
    return project


def _stage(project_dir: Path, preset: str | None, stage: Callable[[Project, Console], StageReport]) -> StageReport:
    if int(os.environ.get("RANK", "0")) > 0:  # one of several training processes: rank 0 speaks for all
        console.quiet = True
    with user_errors():
        _quiet_libraries()
        project = _open_project(project_dir, preset)
        try:
            report = stage(project, console)
        finally:
            project.close()
    _print_report(report)
    return report


def _print_report(report: StageReport) -> None:
    from alambic.reporting import stage_line

    console.print(stage_line(report))


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create.")],
    example: Annotated[str | None, typer.Option(help=f"Start from an example: {', '.join(examples())}.")] = None,
) -> None:
    """Create a new project folder (alambic.toml and docs/)."""
    with user_errors():
        init_project(directory, example)
    output.print(f"created {directory}; next: alambic run --project {directory}")


@app.command()
def synth(project: ProjectOption = Path("."), preset: PresetOption = None) -> None:
    """Have the teacher write training conversations from docs/, by the recipe mix of the synth section."""
    from alambic import synth as stage

    _stage(project, preset, stage.run)


@app.command()
def curate(project: ProjectOption = Path("."), preset: PresetOption = None) -> None:
    """Check, decontaminate, deduplicate and judge the synth items; rejected ones keep their reason."""
    from alambic import curate as stage

    _stage(project, preset, stage.run)


@app.command()
def distill(
    project: ProjectOption = Path("."),
    preset: PresetOption = None,
    processes: Annotated[
        int, typer.Option(min=1, help="Train data-parallel in this many processes (one per GPU; on CPU, gloo).")
    ] = 1,
    strategy: Annotated[
        str, typer.Option(help="With --processes: ddp, fsdp or zero3 (the accelerate configs alambic ships).")
    ] = "ddp",
) -> None:
    """Train the student by sft, kd, sparse or gkd (resumes from its last checkpoint)."""
    from alambic.distill.parallel import STRATEGIES, launch_command, launched

    if processes > 1 and not launched():
        with user_errors():
            if strategy not in STRATEGIES:
                raise AlambicError(f"--strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
            command, environment = launch_command(project, preset, processes, strategy)
        raise typer.Exit(subprocess.run(command, env={**os.environ, **environment}).returncode)
    from alambic import distill as stage

    _stage(project, preset, stage.run)


@app.command("eval")
def evaluate(project: ProjectOption = Path("."), preset: PresetOption = None) -> None:
    """Compare base, each trained student and the teacher on the held-out questions; writes report.html."""
    from alambic import evaluate as stage

    _stage(project, preset, stage.run)


@app.command()
def safety(project: ProjectOption = Path("."), preset: PresetOption = None) -> None:
    """Train the guard and measure refusal and over-refusal of base, students (bare and guarded) and teacher."""
    from alambic import safety as stage

    _stage(project, preset, stage.run)


@app.command()
def release(
    project: ProjectOption = Path("."),
    preset: PresetOption = None,
    override: Annotated[
        str | None, typer.Option(help="Release even if the gate blocks it; the reason goes in the ledger and manifest.")
    ] = None,
) -> None:
    """Gate the student on its safety figures, then export it (open weights, or api-only), signed, with a model card."""
    from alambic import release as stage

    _stage(project, preset, lambda p, c: stage.run(p, c, override=override))


@app.command()
def verify(
    directory: Annotated[Path, typer.Argument(help="A release folder (holds manifest.json and model.sig).")],
    key: Annotated[
        Path | None, typer.Option(help="Public key to trust (PEM); default: the signing-key.pub in the folder.")
    ] = None,
) -> None:
    """Check every file of a release against its signed manifest; any changed byte fails."""
    from alambic.release.signing import verify_release

    with user_errors():
        checked = verify_release(directory, key)
    trust = "" if key else " (with the public key shipped in the folder: this proves integrity, not who signed it)"
    output.print(f"verified {checked} files in {directory}{trust}", soft_wrap=True)


@app.command()
def run(project: ProjectOption = Path("."), preset: PresetOption = None) -> None:
    """Run every stage in order (synth, curate, distill, eval, safety, release), skipping what is already done."""
    from alambic import curate, distill, evaluate, release, safety, synth
    from alambic.reporting import summary_table

    started = time.monotonic()
    reports = [_stage(project, preset, stage.run) for stage in (synth, curate, distill, evaluate, safety, release)]
    output.print(summary_table(reports, time.monotonic() - started))
    with user_errors():
        cfg = Project.open(project, preset).config.serve
    root = project.resolve()
    preset_arg = f" --preset {preset}" if preset else ""
    output.print(f"\nA key:     alambic keys create me --project {root}   (shown once)", soft_wrap=True)
    output.print(f"Serve it:  alambic serve --project {root}{preset_arg}", soft_wrap=True)
    output.print(f"Talk:      http://{cfg.host}:{cfg.port}/ui/", soft_wrap=True)
    output.print(
        f"Ask it:    curl -s http://{cfg.host}:{cfg.port}/v1/chat/completions -H 'Content-Type: application/json' "
        '-H "Authorization: Bearer $KEY" '
        """-d '{"model": "agent", "user": "me", "messages": [{"role": "user", "content": "When do you roast?"}]}'""",
        soft_wrap=True,
    )


@app.command()
def serve(
    project: ProjectOption = Path("."),
    preset: PresetOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    quant: Annotated[str | None, typer.Option(help="Which GGUF of the release: f16, q8_0 or q4_k_m.")] = None,
    guard: Annotated[
        bool | None,
        typer.Option("--guard/--no-guard", help="Guard requests and answers (default: serve.guard; api-only: always)."),
    ] = None,
    auth: Annotated[
        bool, typer.Option("--auth/--no-auth", help="Ask every request for an API key; --no-auth only on loopback.")
    ] = True,
) -> None:
    """Serve the release as an OpenAI-compatible API (/v1/chat/completions, /v1/models, /healthz, /metrics) and
    the /ui page: model `student`, and `agent` (retrieval, tools, memory, hand-off), guarded, behind API keys."""
    from alambic import serve as stage

    with user_errors():
        _quiet_libraries()
        project_obj = _open_project(project, preset)
        stage.serve(project_obj, console, host=host, port=port, quant=quant, guard=guard, auth=auth)


@app.command()
def proxy(
    project: ProjectOption = Path("."),
    teacher: Annotated[
        str | None, typer.Option(help="The teacher's OpenAI-compatible URL (default: teacher.base_url).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8200,
    auth: Annotated[
        bool, typer.Option("--auth/--no-auth", help="Ask every request for an API key; --no-auth only on loopback.")
    ] = True,
) -> None:
    """Pass chat completions through to the teacher and record every exchange in the ledger, for
    `synth.captured = true` to train on."""
    from alambic import serve as stage

    with user_errors():
        project_obj = _open_project(project, None)
        stage.proxy(project_obj, console, teacher, host, port, auth)


keys_app = typer.Typer(help="API keys of the served model: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name for who uses the key, e.g. website or alice.")],
    project: ProjectOption = Path("."),
    review: Annotated[bool, typer.Option(help="Also allow reviewing the dataset on /ui.")] = False,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute (default: serve.limits).")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute (default: serve.limits).")] = None,
) -> None:
    """Make a key and print it once; only its hash is stored."""
    from alambic.serve.keys import create_key

    limits = {k: v for k, v in {"requests_per_minute": rpm, "tokens_per_minute": tpm}.items() if v is not None}
    with user_errors():
        project_obj = _open_project(project, None)
        try:
            key, secret = create_key(project_obj.ledger, name, ["chat", *(["review"] if review else [])], limits)
        finally:
            project_obj.close()
    console.print(f"created {key.id} ({name}); it is shown only now, keep it safe:")
    output.print(secret)


@keys_app.command("list")
def keys_list(project: ProjectOption = Path(".")) -> None:
    """The keys, with their scopes and limits (never the keys themselves)."""
    from rich.table import Table

    with user_errors():
        project_obj = _open_project(project, None)
        try:
            keys = project_obj.ledger.api_keys()
        finally:
            project_obj.close()
    table = Table("id", "name", "scopes", "limits", "created", "revoked")
    for key in keys:
        revoked = time.strftime("%Y-%m-%d %H:%M", time.localtime(key.revoked_at)) if key.revoked_at else ""
        limits = ", ".join(f"{k}={v}" for k, v in key.limits.items()) or "default"
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(key.created_at))
        table.add_row(key.id, key.name, ", ".join(key.scopes), limits, created, revoked)
    output.print(table)


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="The key's name or id.")], project: ProjectOption = Path(".")
) -> None:
    """Revoke a key: from now on a request with it gets 401, even on a server already running."""
    with user_errors():
        project_obj = _open_project(project, None)
        try:
            if not project_obj.ledger.revoke_api_key(name):
                raise AlambicError(f"key {name!r}: no live key has this name or id")
        finally:
            project_obj.close()
    console.print(f"revoked {name}")


data_app = typer.Typer(help="Review the dataset: export it, import edits, show it.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("export")
def data_export(
    out: Annotated[Path, typer.Argument(help="File to write, e.g. review.parquet.")],
    project: ProjectOption = Path("."),
    fmt: Annotated[
        str | None, typer.Option("--format", help="jsonl, parquet or csv (default: from the suffix).")
    ] = None,
    kept_only: Annotated[bool, typer.Option(help="Leave out the items curation or review rejected.")] = False,
) -> None:
    """Write the latest synth run's items with their curation status, for review or for other tools."""
    from alambic.review import export

    with user_errors():
        project_obj = _open_project(project, None)
        try:
            count = export(project_obj.ledger, out, fmt or out.suffix.lstrip(".").lower(), not kept_only)
        finally:
            project_obj.close()
    output.print(f"wrote {count} rows to {out}")


@data_app.command("import")
def data_import(
    reviewed: Annotated[Path, typer.Argument(help="An exported file with edited rows (jsonl, parquet or csv).")],
    project: ProjectOption = Path("."),
) -> None:
    """Bring reviewed rows back by id: status 'rejected' drops an item, edited text replaces it."""
    from alambic.review import import_reviews

    with user_errors():
        project_obj = _open_project(project, None)
        try:
            counts = import_reviews(project_obj.ledger, reviewed)
        finally:
            project_obj.close()
    output.print(", ".join(f"{count} {action}" for action, count in counts.items()))


@data_app.command("show")
def data_show(
    project: ProjectOption = Path("."),
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 20,
    recipe: Annotated[str | None, typer.Option(help="Only this recipe, e.g. grounded-qa.")] = None,
    status: Annotated[str | None, typer.Option(help="Only 'ok' or 'rejected' items.")] = None,
) -> None:
    """Show the dataset as a table in the terminal."""
    from alambic.reporting import dataset_table
    from alambic.review import dataset_rows

    with user_errors():
        project_obj = _open_project(project, None)
        try:
            rows = [
                row
                for row in dataset_rows(project_obj.ledger)
                if (recipe is None or row["recipe"] == recipe) and (status is None or row["status"] == status)
            ]
        finally:
            project_obj.close()
    output.print(dataset_table(rows[:limit], len(rows)))


teacher_app = typer.Typer(help="Work with the teacher model.", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")


@teacher_app.command("serve")
def teacher_serve(
    model: Annotated[str, typer.Option(help="'embedded' or the path of a GGUF file.")] = "embedded",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8100,
    n_ctx: Annotated[int, typer.Option(help="Context size.")] = 2048,
) -> None:
    """Serve a GGUF teacher (the embedded one by default) as an OpenAI-compatible API, for `backend = 'openai'`."""
    from alambic.models.embedded import EMBEDDED_NAME, embedded_gguf
    from alambic.serve import serve_gguf

    with user_errors():
        _quiet_libraries()
        gguf = embedded_gguf() if model == "embedded" else Path(model).expanduser().resolve()
        if not gguf.is_file():
            raise AlambicError(f"--model: {gguf} does not exist")
        alias = EMBEDDED_NAME if model == "embedded" else gguf.stem
        output.print(
            f'In alambic.toml:  [teacher] backend = "openai"  base_url = "http://{host}:{port}/v1"  '
            f'model = "{alias}"  json_mode = "json_object"  extra_body = {{ repeat_penalty = 1.0 }}',
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
        serve_gguf(gguf, alias, host, port, n_ctx, console)


@app.command()
def docs(
    project: ProjectOption = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """List the documents under docs/: converter, pages or sheets, chunks, warnings, and whether synth has them."""
    from alambic.reporting import documents_data, documents_table

    with user_errors():
        project_obj = _open_project(project, None)
        try:
            with console.status("reading documents (a new or changed file is converted once, then kept)"):
                rows = documents_data(project_obj)
        finally:
            project_obj.close()
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    else:
        output.print(documents_table(rows))


@app.command()
def status(
    project: ProjectOption = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Show stages, item counts, rejections by reason, artifacts and lineage."""
    from alambic.reporting import status_data, status_tables

    with user_errors():
        project_obj = _open_project(project, None)
        data = status_data(project_obj)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    else:
        for table in status_tables(data):
            output.print(table)


def version_callback(value: bool) -> None:
    if value:
        output.print(f"alambic {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """alambic: from your documents and a teacher model to your own small model and agent."""
