"""safety-report.html: who refuses what, the retention, and what the guard catches."""

from __future__ import annotations

import os
from pathlib import Path

import jinja2

from alambic.results import SafetyResult


def write_safety_report(path: Path, project: str, result: SafetyResult) -> Path:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True
    )
    html = environment.get_template("safety.html.j2").render(project=project, r=result)
    partial = path.with_suffix(".html.partial")
    partial.write_text(html, encoding="utf-8")
    os.replace(partial, path)
    return path
