"""safety-report.html: who refuses what, the retention, and what the guard catches; the same section goes into
eval's report.html."""

from __future__ import annotations

import os
import re
from pathlib import Path

import jinja2

from alambic.results import SafetyResult

SECTION = re.compile(r'<section id="safety">.*?</section>', re.DOTALL)


def write_safety_report(path: Path, project: str, result: SafetyResult) -> Path:
    _write(path, _environment().get_template("safety.html.j2").render(project=project, r=result))
    return path


def add_to_eval_report(path: Path, result: SafetyResult) -> bool:
    """Puts the safety section into eval's report.html in place of the one there; False when there is none."""
    if not path.is_file():
        return False
    html = path.read_text(encoding="utf-8")
    section = _environment().get_template("safety-section.html.j2").render(r=result)
    if SECTION.search(html) is None:
        return False
    _write(path, SECTION.sub(lambda _: section, html, count=1))
    return True


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True)


def _write(path: Path, html: str) -> None:
    partial = path.with_suffix(".html.partial")
    partial.write_text(html, encoding="utf-8")
    os.replace(partial, path)
