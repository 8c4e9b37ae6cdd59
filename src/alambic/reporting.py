"""Terminal rendering of stage reports, the final summary and `alambic status`."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

from alambic.project import Project
from alambic.results import CurateResult, DistillResult, EvalResult, ReleaseResult, SafetyResult, SynthResult
from alambic.stage import StageReport


def stage_line(report: StageReport) -> str:
    state = "already done, skipped" if report.skipped else f"done in {report.seconds:.0f}s"
    return f"[bold green]{report.stage}[/] {report.run_id}: {state}"


def _stage_facts(report: StageReport) -> str:
    result = report.result
    if isinstance(result, SynthResult):
        rejected = sum(result.rejected.values())
        facts = f", {result.facts.get('checked', 0)} answer facts checked in the documents" if result.facts else ""
        return f"{result.train_items} train + {result.heldout_items} held-out items, {rejected} rejected{facts}"
    if isinstance(result, CurateResult):
        judge, verdict = result.judge, ""
        if judge.enabled:
            kappa = judge.self_agreement.get("kappa")
            verdict = f", judge self-agreement kappa {kappa if kappa is not None else 'n/a'}"
            verdict += "" if judge.applied else " (too low: scores reported, not applied)"
        return f"{result.kept} of {result.items} items kept, {sum(result.rejected.values())} rejected{verdict}"
    if isinstance(result, DistillResult):
        return (
            f"{result.method}, {len(result.kept_layers)}/{result.base_layers} layers, {result.adapter}, "
            f"{result.steps} steps, {result.tokens_per_second:.0f} tok/s, final loss {result.losses[-1][1]:.3f}"
        )
    if isinstance(result, EvalResult):
        return f"{result.questions} held-out questions, report: {result.report}"
    if isinstance(result, SafetyResult):
        return (
            f"served refusal {result.served_refusal:.2f}, over-refusal {result.served_over_refusal:.2f}, "
            f"retention {result.retention:+.2f} bare{_as_the_agent(result.agent_retention)}; report: {result.report}"
        )
    if isinstance(result, ReleaseResult):
        gate = f"{result.gate.outcome}: " if result.gate else ""
        return f"{gate}{len(result.files)} files in {result.dir}"
    return ""


def _as_the_agent(retention: float | None) -> str:
    return "" if retention is None else f", {retention:+.2f} as the agent"


def summary_table(reports: list[StageReport], seconds: float) -> RenderableType:
    table = Table(title=f"alambic run ({seconds:.0f}s)", title_justify="left")
    for column in ("stage", "run", "time", "result"):
        table.add_column(column)
    for report in reports:
        took = "skipped" if report.skipped else f"{report.seconds:.0f}s"
        table.add_row(report.stage, report.run_id, took, _stage_facts(report))
    evaluation = next((r.result for r in reports if isinstance(r.result, EvalResult)), None)
    if evaluation is None:
        return table
    grid = Table.grid()
    grid.add_row(table)
    grid.add_row(evaluation_table(evaluation))
    return grid


def with_interval(value: float | None, interval: tuple[float, float] | None) -> str:
    if value is None or interval is None:
        return "—"
    return f"{value:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]"


def evaluation_table(evaluation: EvalResult) -> Table:
    table = Table(title="held-out evaluation (question asked without its chunk)", title_justify="left")
    voice = ("voice",) if evaluation.voice else ()
    columns = (
        "model",
        "fact recall",
        "hand-checked",
        "gap: held-out / hand-checked",
        "fluency",
        *voice,
        "token F1",
        "cosine",
    )
    for column in (*columns, "held-out loss", "KL to teacher", "answer tok/s", "size"):
        table.add_column(column, justify="right" if column != "model" else "left")
    for row in evaluation.models:
        loss = "—" if row.heldout_loss is None else f"{row.heldout_loss:.3f}"
        kl = "—" if row.kl_to_teacher is None else f"{row.kl_to_teacher:.3f}"
        voice_cell = ("—" if row.voice is None else f"{row.voice:.2f}",) if evaluation.voice else ()
        table.add_row(
            row.label,
            with_interval(row.fact_recall, row.fact_recall_interval),
            with_interval(row.checked_fact_recall, row.checked_fact_recall_interval),
            " / ".join("—" if gap is None else f"{gap:.2f}" for gap in (row.gap_recovery, row.checked_gap_recovery)),
            "—" if row.fluency_nll is None else f"{row.fluency_nll:.2f}",
            *voice_cell,
            f"{row.f1:.3f}",
            f"{row.cosine:.3f}",
            loss,
            kl,
            f"{row.tokens_per_second:.0f}",
            row.size,
        )
    return table


def status_data(project: Project) -> dict[str, Any]:
    ledger = project.ledger
    counts: dict[str, dict[str, Any]] = defaultdict(lambda: {"ok": 0, "rejected": 0, "failed": 0, "reasons": {}})
    for stage, kind, status, reason, count in ledger.item_counts():
        entry = counts[f"{stage}/{kind}"]
        entry[status] += count
        if reason:
            grouped = reason.split(":")[0]
            entry["reasons"][grouped] = entry["reasons"].get(grouped, 0) + count
    return {
        "project": str(project.root),
        "ledger": str(ledger.path),
        "schema_version": ledger.schema_version,
        "runs": [
            {
                "id": r.id,
                "stage": r.stage,
                "state": r.state,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
            }
            for r in ledger.runs()
        ],
        "items": dict(counts),
        "artifacts": [
            {
                "id": a.id,
                "kind": a.kind,
                "path": a.path,
                "bytes": a.bytes,
                "sha256": a.sha256,
                "parents": len(ledger.parents(a.id)),
            }
            for a in ledger.artifacts()
        ],
        "lineage_edges": ledger.lineage_count(),
        "teacher_usage": _usage(project),
    }


def _usage(project: Project) -> list[dict[str, Any]]:
    teacher = project.config.teacher
    rows = []
    for endpoint, recipe, requests, prompt, completion in project.ledger.usage():
        cost = (prompt * teacher.price_prompt_per_m + completion * teacher.price_completion_per_m) / 1e6
        rows.append(
            {
                "endpoint": endpoint,
                "recipe": recipe,
                "requests": requests,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cost": round(cost, 6),
            }
        )
    return rows


def status_tables(data: dict[str, Any]) -> list[Table]:
    runs = Table(title=f"runs ({data['ledger']}, schema v{data['schema_version']})", title_justify="left")
    for column in ("stage", "run", "state"):
        runs.add_column(column)
    for run in data["runs"]:
        runs.add_row(run["stage"], run["id"], run["state"])
    items = Table(title="items", title_justify="left")
    for column in ("stage/kind", "ok", "rejected", "failed", "rejections by reason"):
        items.add_column(column)
    for name, entry in data["items"].items():
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(entry["reasons"].items()))
        items.add_row(name, str(entry["ok"]), str(entry["rejected"]), str(entry["failed"]), reasons)
    artifacts = Table(title=f"artifacts ({data['lineage_edges']} lineage edges)", title_justify="left")
    for column in ("kind", "id", "size", "inputs", "path"):
        artifacts.add_column(column)
    for artifact in data["artifacts"]:
        size = f"{(artifact['bytes'] or 0) / 1e6:.1f} MB"
        artifacts.add_row(artifact["kind"], artifact["id"], size, str(artifact["parents"]), artifact["path"])
    usage = Table(title="teacher usage (paid requests, cached for reuse)", title_justify="left")
    for column in ("endpoint", "recipe", "requests", "prompt tokens", "completion tokens", "cost"):
        usage.add_column(column, justify="left" if column in ("endpoint", "recipe") else "right")
    for row in data["teacher_usage"]:
        usage.add_row(
            row["endpoint"],
            row["recipe"],
            str(row["requests"]),
            str(row["prompt_tokens"]),
            str(row["completion_tokens"]),
            f"{row['cost']:.4f}",
        )
    return [runs, items, artifacts, usage]


def dataset_table(rows: list[dict[str, Any]], total: int) -> Table:
    table = Table(title=f"dataset ({len(rows)} of {total} rows)", title_justify="left", show_lines=True)
    for column in ("id", "recipe", "split", "status", "question", "answer"):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = row["status"] if row["status"] == "ok" else f"[red]{row['status']}[/]\n{escape(row['reason'])}"
        table.add_row(
            row["id"][:10],
            row["recipe"],
            row["split"],
            status,
            escape(_clip(row["question"], 160)),
            escape(_clip(row["answer"], 240)),
        )
    return table


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def documents_data(project: Project) -> list[dict[str, Any]]:
    """What `alambic docs` shows: each document as converted and chunked now, and whether synth has recorded it."""
    rows = []
    for document in project.documents():
        chunks = document.chunks(project.config.synth.chunk_chars)
        recorded = project.ledger.item(document.key) is not None
        rows.append(
            {
                "file": document.relpath,
                "converter": document.converter,
                "pages": len(document.pages),
                "unit": document.unit,
                "sheets": sorted({c.headings[0] for c in chunks if c.headings}) if document.spreadsheet else [],
                "chars": len(document.text),
                "chunks": len(chunks),
                "ingested": recorded,
                "warnings": list(document.warnings),
            }
        )
    return rows


def documents_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"documents ({len(rows)})", title_justify="left")
    for column in ("file", "converter", "pages", "chars", "chunks", "ingested", "warnings"):
        table.add_column(column, overflow="fold", justify="right" if column in ("chars", "chunks") else "left")
    for row in rows:
        if row["pages"]:
            pages = f"{row['pages']} {row['unit']}s"
        else:
            pages = f"{len(row['sheets'])} sheets" if row["sheets"] else "-"
        ingested = "yes" if row["ingested"] else "[yellow]not yet[/] (run synth)"
        table.add_row(
            escape(row["file"]),
            row["converter"],
            pages,
            str(row["chars"]),
            str(row["chunks"]),
            ingested,
            "[yellow]" + escape("; ".join(row["warnings"])) + "[/]" if row["warnings"] else "",
        )
    return table
