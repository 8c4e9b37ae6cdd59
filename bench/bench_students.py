"""Which student a user would want: speed against fact recall over student sizes, on a finished support-desk
project (AGENT_PROJECT, default demo-shop: run `make demo` first).

Each size is a copy of the project with only `[distill] prune_layers` changed (30 keeps every layer of the
embedded SmolLM2-135M), distilled on the same dataset, evaluated and released (with --override: the gate is
not what is measured here). Each released Q4 GGUF then answers the example's hand-checked questions as the agent
(retrieval included), and its tokens/s and fact recall are set against the embedded teacher's on the same agent
prompts; the teacher given the passage that holds the fact is the fact-recall goal. Writes
bench/out/students.svg. About 40 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from alambic.agent.retrieval import Retriever, project_index
from alambic.models.embedded import embedded_gguf, minilm_dir
from alambic.models.embeddings import Embedder
from alambic.project import Project
from alambic.results import EvalResult, ReleaseResult
from bench_agent import QUESTIONS, agent_fact_recall, teacher_fact_recall
from figures import figure

HERE = Path(__file__).resolve().parent
LAYERS = tuple(int(n) for n in os.environ.get("STUDENT_LAYERS", "8,16,30").split(","))
PRUNE = re.compile(r"^prune_layers\s*=.*$", re.MULTILINE)


def with_layers(project: Path, layers: int) -> Path:
    """The project itself at its own size, else a copy whose student keeps `layers` layers, distilled,
    evaluated and released."""
    text = (project / "alambic.toml").read_text(encoding="utf-8")
    found = PRUNE.search(text)
    if found is None:
        raise SystemExit(f"{project}/alambic.toml: no prune_layers in [distill] to vary")
    if found.group(0).split("=")[1].strip() == str(layers):
        return project
    copy = HERE / "out" / "students" / f"layers-{layers}"
    if not copy.exists():
        ignored = shutil.ignore_patterns("*.partial", "releases", "serving-*", "distill-*", "guard-*")
        shutil.copytree(project, copy, ignore=ignored)
    (copy / "alambic.toml").write_text(PRUNE.sub(f"prune_layers = {layers}", text, count=1), encoding="utf-8")
    alambic = [sys.executable, "-m", "alambic"]
    for stage in ("distill", "eval"):
        subprocess.run([*alambic, stage, "--project", str(copy)], check=True)
    subprocess.run([*alambic, "release", "--project", str(copy), "--override", "benchmark: student sizes"], check=True)
    return copy


def released_gguf(project: Project) -> Path:
    release = project.ledger.latest_done("release")
    if release is None:
        raise SystemExit(f"{project.root}: no release")
    paths = release.result(ReleaseResult).gguf
    return Path(paths.get("q4_k_m") or next(iter(paths.values())))


def plot(points: list[dict], teacher: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for point in points:
        ax.scatter(point["speed"], point["fact_recall"], color="tab:blue")
        ax.annotate(f"{point['layers']} layers", (point["speed"], point["fact_recall"]))
    ax.scatter(teacher["speed"], teacher["fact_recall_as_agent"], color="tab:red")
    ax.annotate("teacher as the agent", (teacher["speed"], teacher["fact_recall_as_agent"]))
    ax.axhline(teacher["fact_recall"], color="tab:red", linestyle=":", label="teacher given the fact's passage")
    ax.legend(loc="lower right")
    ax.set_xlabel("tokens/s on this CPU (agent: retrieval included)")
    ax.set_ylabel("fact recall, hand-checked questions")
    ax.set_title("Student size: speed against fact recall")
    fig.tight_layout()
    fig.savefig(path)


def run() -> list[dict]:
    root = Path(os.environ.get("AGENT_PROJECT", "demo-shop")).resolve()
    rows = [json.loads(line) for line in (root / QUESTIONS).read_text(encoding="utf-8").splitlines() if line.strip()]
    embedder = Embedder(minilm_dir())
    project = Project.open(root)
    retriever = Retriever(project_index(project, embedder), embedder)
    teacher_recall = teacher_fact_recall(project, retriever, rows).fact_recall
    teacher_agent_recall, teacher_speed, _ = agent_fact_recall(project, retriever, rows, embedded_gguf())
    teacher = {"speed": teacher_speed, "fact_recall": teacher_recall, "fact_recall_as_agent": teacher_agent_recall}
    print(
        f"teacher: fact recall {teacher_recall:.2f} given the fact's passage; as the agent {teacher_agent_recall:.2f} "
        f"at {teacher_speed:.0f} tok/s"
    )
    points, figures = [], []
    for layers in LAYERS:
        copy = Project.open(with_layers(root, layers))
        recall, speed, _ = agent_fact_recall(copy, retriever, rows, released_gguf(copy))
        evaluated = copy.ledger.latest_done("evaluate")
        student = (
            next(row for row in evaluated.result(EvalResult).models if row.role == "student") if evaluated else None
        )
        fluency = student.fluency_nll if student is not None else None
        points.append({"layers": layers, "speed": speed, "fact_recall": recall, "fluency": fluency})
        print(
            f"{layers} layers: agent fact recall {recall:.2f} at {speed:.0f} tok/s "
            f"({speed / teacher_speed:.2f}x the teacher), fluency (teacher NLL/token) {fluency}"
        )
        figures.append(figure(f"students-{layers}-layers-speed", speed, "tok/s", "teacher", teacher_speed, ">= 2.5"))
        figures.append(
            figure(
                f"students-{layers}-layers-fact-recall",
                recall,
                "share",
                "teacher + passage",
                teacher_recall or 1e-9,
                ">= 1.0",
            )
        )
    retriever.close()
    (HERE / "out").mkdir(exist_ok=True)
    plot(points, teacher, HERE / "out" / "students.svg")
    (HERE / "out" / "students-points.json").write_text(json.dumps({"teacher": teacher, "students": points}, indent=1))
    return figures
