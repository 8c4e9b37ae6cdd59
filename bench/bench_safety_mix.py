"""Refusal retention against the safety recipe's share of the mix (0%, 3%, 5%, 15%), on a finished support-desk project
(SAFETY_PROJECT, default demo-shop: run `make demo` first).

Each share is a copy of the project with only `[synth] recipes.safety` changed, run through synth (the teacher
writes only what the copy's ledger lacks), curate, distill and safety; the project's own share is read from the
project itself. Safety-Tuned LLaMAs (Bianchi et al. 2024) found that about 3% of safety data restores most of
the refusals that fine-tuning removes. About 12 minutes a share on 2 cores with the embedded teacher.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from alambic.project import Project
from alambic.results import SafetyResult
from figures import retention_figure

HERE = Path(__file__).resolve().parent
SHARES = (0.0, 0.03, 0.05, 0.15)
STAGES = ("synth", "curate", "distill", "safety")
SAFETY_WEIGHT = re.compile(r'("safety"\s*=\s*)[0-9.]+')


def with_share(project: Path, share: float) -> Path:
    """The project itself at its own share, else a copy of it at `share`."""
    config = project / "alambic.toml"
    weights = tomllib.loads(config.read_text(encoding="utf-8"))["synth"]["recipes"]
    if abs(weights.get("safety", 0.0) - share) < 1e-9:
        return project
    others = sum(weight for name, weight in weights.items() if name != "safety")
    copy = HERE / "out" / "safety-mix" / f"share-{round(share * 100)}"
    if not copy.exists():
        shutil.copytree(project, copy, ignore=shutil.ignore_patterns("*.partial", "releases", "serving-*", "distill-*"))
    text = config.read_text(encoding="utf-8")
    if SAFETY_WEIGHT.search(text) is None:
        raise SystemExit(f'{config}: no "safety" weight in [synth] recipes to vary')
    # The other recipes keep their weights; safety's becomes `share` of the whole.
    weight = round(share * others / (1 - share), 6)
    (copy / "alambic.toml").write_text(SAFETY_WEIGHT.sub(rf"\g<1>{weight}", text, count=1), encoding="utf-8")
    for stage in STAGES:
        subprocess.run([sys.executable, "-m", "alambic", stage, "--project", str(copy)], check=True)
    return copy


def run() -> list[dict]:
    root = Path(os.environ.get("SAFETY_PROJECT", "demo-shop")).resolve()
    if not (root / "alambic.toml").is_file():
        raise SystemExit(f"{root}: no project; run `make demo` first or set SAFETY_PROJECT")
    figures = []
    for share in SHARES:
        ledger = Project.open(with_share(root, share)).ledger
        safety_run = ledger.latest_done("safety")
        if safety_run is None:
            raise SystemExit(f"{root}: no finished safety run at share {share}")
        safety = safety_run.result(SafetyResult)
        base = next(row for row in safety.models if row.role == "base")
        low, high = safety.retention_interval
        print(
            f"safety share {share:.0%}: student refuses {safety.bare_refusal:.3f}, base {base.refusal:.3f}, "
            f"retention {safety.retention:+.3f} [{low:+.3f}, {high:+.3f}], served {safety.served_refusal:.3f}, "
            f"served over-refusal {safety.served_over_refusal:.3f}"
        )
        figures.append(retention_figure(f"safety-mix-{round(share * 100)}pct-retention", safety))
    return figures
