"""Quality on the support-desk example: does logit-level distillation beat training on the teacher's text?

One dataset, written by the embedded teacher (SmolLM2-135M-Instruct) through llama-cpp-python's OpenAI
server on loopback with `synth.logprobs = 20`, so every answer carries the server's top-20 log-probs.
On it, per seed (QUALITY_SEEDS, default 3; the seed sets the data order), four students, each the
base depth-pruned to 8 of its 30 layers and fully fine-tuned with the same schedule:
- `sft`: cross-entropy on the teacher's answers;
- `kd`: the same plus forward KL to the full distribution of the transformers teacher (the server's GGUF,
  dequantised), which reads the prompt it answered;
- `sparse` (local): the same as `kd`, on that teacher's top-20 only;
- `sparse` (api): the same, on the top-20 the server returned over HTTP while it wrote the answers.
Each is scored on the held-out questions (asked without their chunk; greedy): token F1 and MiniLM cosine
against the teacher's answer, held-out loss, and KL(teacher ‖ student) per answer token. The untrained
pruned student and the teacher itself, asked the same way (no chunk), are scored beside them: the teacher's
own F1 shows how much room the metric leaves for a student that imitates it better.

The figures are means over seeds; the table printed before them gives each seed and the spread, and then,
for kd and sparse against sft, the mean per-question difference in F1 and cosine with a 95% bootstrap
interval over the questions. About 1 h 45 min on 2 idle cores: ~25 min for the data, ~3.5 min per sft or
sparse student, ~12 min per kd student (its teacher reads every batch), ~10 min of scoring.
QUALITY_PROJECT names the project folder (default bench/out/quality-project); its ledger keeps the data
and every finished student, so a second run only scores them.
"""

from __future__ import annotations

import os
import random
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from alambic import curate, distill, synth
from alambic.dataset import latest_synth_run, split_items
from alambic.evaluate import kl_to_teacher
from alambic.evaluate.metrics import token_f1
from alambic.models.base import Sampling
from alambic.models.embedded import embedded_hf_dir, minilm_dir
from alambic.models.embeddings import Embedder
from alambic.models.hf import HFChat
from alambic.project import Project, init_project
from figures import figure

HERE = Path(__file__).resolve().parent
BOOTSTRAP_DRAWS = 10_000
STUDENTS = {
    "sft": {"method": "sft"},
    "kd": {"method": "kd"},
    "sparse-local": {"method": "sparse", "logits_source": "local", "top_k": 20},
    "sparse-api": {"method": "sparse", "logits_source": "api"},
}
TEACHER = """[teacher]
backend = "openai"
base_url = "{url}"
model = "SmolLM2-135M-Instruct"
json_mode = "json_object"
concurrency = 2
extra_body = {{ repeat_penalty = 1.0 }}

"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def teacher_server() -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "alambic", "teacher", "serve", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}/models", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the teacher server did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def make_project(root: Path, url: str) -> None:
    init_project(root, "support-desk")
    config = root / "alambic.toml"
    text = re.sub(r"\[teacher\].*?\n\n", TEACHER.format(url=url), config.read_text(), flags=re.S)
    text = text.replace("[synth]\n", "[synth]\nlogprobs = 20\n").replace("judge = true", "judge = false")
    config.write_text(text)


def write_data(root: Path, console: Console) -> None:
    with teacher_server() as url:
        if not root.exists():
            make_project(root, url)
        else:  # the server's port changes from run to run; synth skips its requests when it is done
            config = root / "alambic.toml"
            config.write_text(re.sub(r'base_url = "[^"]*"', f'base_url = "{url}"', config.read_text()))
        for stage in (synth, curate):
            project = Project.open(root)
            try:
                stage.run(project, console)
            finally:
                project.close()


def train(root: Path, name: str, seed: int, console: Console) -> dict[str, Any]:
    project = Project.open(root)
    try:
        settings = project.config.distill.model_copy(update={**STUDENTS[name], "seed": seed})
        project.config = project.config.model_copy(update={"distill": settings})
        return distill.run(project, console).summary
    finally:
        project.close()


def score(model: HFChat, reference: HFChat, heldout: list[Any], embedder: Embedder) -> dict[str, Any]:
    """Per-question F1 and cosine (lists, so that methods can be paired question by question), held-out
    loss and KL to the reference teacher."""
    from alambic.evaluate import _heldout_loss

    prompts = [item.payload["messages"][:-1] for item in heldout]
    answers = [c.text.strip() for c in model.chat_batch(prompts, Sampling(temperature=0.0, max_tokens=128))]
    references = [item.payload["answer"] for item in heldout]
    kl = kl_to_teacher(model, reference, heldout)
    return {
        "f1": list(map(token_f1, answers, references)),
        "cosine": embedder.cosine(answers, references),
        "loss": _heldout_loss(model.model, model.tokenizer, heldout),
        "kl": float("nan") if kl is None else kl,
    }


def means(row: dict[str, Any]) -> dict[str, float]:
    return {metric: statistics.fmean(v) if isinstance(v, list) else v for metric, v in row.items()}


def cells(row: dict[str, float]) -> str:
    return "".join(f"{row[metric]:>8.3f}" for metric in ("f1", "cosine", "loss", "kl"))


def paired_interval(method: list[list[float]], baseline: list[list[float]]) -> tuple[float, float, float]:
    """Mean per-question difference (each side averaged over seeds) and its 95% bootstrap interval over
    questions: whether a difference is larger than what the choice of held-out questions explains."""
    per_question = zip(zip(*method, strict=True), zip(*baseline, strict=True), strict=True)
    differences = [statistics.fmean(m) - statistics.fmean(b) for m, b in per_question]
    draw = random.Random(0)
    resampled = sorted(statistics.fmean(draw.choices(differences, k=len(differences))) for _ in range(BOOTSTRAP_DRAWS))
    low, high = resampled[int(0.025 * BOOTSTRAP_DRAWS)], resampled[int(0.975 * BOOTSTRAP_DRAWS) - 1]
    return statistics.fmean(differences), low, high


def run() -> list[dict]:
    console = Console(stderr=True)
    root = Path(os.environ.get("QUALITY_PROJECT", HERE / "out" / "quality-project")).resolve()
    seeds = range(int(os.environ.get("QUALITY_SEEDS", "3")))
    write_data(root, console)
    project = Project.open(root)
    heldout = [i for i in split_items(project.ledger, latest_synth_run(project.ledger))["heldout"] if i.kind == "qa"]
    project.close()

    students = {(name, seed): train(root, name, seed, console) for seed in seeds for name in STUDENTS}
    reference = HFChat.from_dir(embedded_hf_dir(), "teacher")
    embedder = Embedder(minilm_dir())
    first = next(iter(students.values()))
    base = means(score(HFChat.from_dir(Path(first["init_dir"])), reference, heldout, embedder))
    teacher = means(score(reference, reference, heldout, embedder))
    scores = {
        key: score(HFChat.from_dir(Path(s["student_dir"])), reference, heldout, embedder) for key, s in students.items()
    }

    print(f"{len(heldout)} held-out questions; {first['examples']} training examples; seeds {list(seeds)}")
    print(f"{'student':<14}{'seed':>5}{'F1':>8}{'cosine':>8}{'loss':>8}{'KL':>8}")
    print(f"{'base':<14}{'-':>5}{cells(base)}")
    print(f"{'teacher':<14}{'-':>5}{cells(teacher)}")
    mean: dict[str, dict[str, float]] = {}
    for name in STUDENTS:
        rows = [means(scores[name, seed]) for seed in seeds]
        for seed, row in zip(seeds, rows, strict=True):
            print(f"{name:<14}{seed:>5}{cells(row)}")
        mean[name] = {m: statistics.fmean(r[m] for r in rows) for m in rows[0]}
        spread = {m: statistics.stdev(r[m] for r in rows) if len(rows) > 1 else 0.0 for m in rows[0]}
        print(f"{name + ' mean':<14}{'':>5}{cells(mean[name])}")
        print(f"{name + ' sd':<14}{'':>5}{cells(spread)}")
    for name in ("kd", "sparse-local"):
        for metric in ("f1", "cosine"):
            difference, low, high = paired_interval(
                [scores[name, seed][metric] for seed in seeds], [scores["sft", seed][metric] for seed in seeds]
            )
            print(f"{name} - sft, {metric}, per question: {difference:+.3f} (95% bootstrap {low:+.3f} to {high:+.3f})")

    sparse, sft, api, kd = mean["sparse-local"], mean["sft"], mean["sparse-api"], mean["kd"]
    return [
        figure("quality-kd-kl-vs-sft", kd["kl"], "nats/token", "sft", sft["kl"], "< 1"),
        figure("quality-kd-f1-vs-sft", kd["f1"], "F1", "sft", sft["f1"], "> 1"),
        figure("quality-kd-cosine-vs-sft", kd["cosine"], "cosine", "sft", sft["cosine"], "> 1"),
        figure("quality-sparse-kl-vs-sft", sparse["kl"], "nats/token", "sft", sft["kl"], "< 1"),
        figure("quality-sparse-f1-vs-sft", sparse["f1"], "F1", "sft", sft["f1"], "> 1"),
        figure("quality-sparse-cosine-vs-sft", sparse["cosine"], "cosine", "sft", sft["cosine"], "> 1"),
        figure(
            "quality-sft-f1-vs-teacher",
            sft["f1"],
            "F1",
            "the teacher, asked the same",
            teacher["f1"],
            "context: >= 1 leaves F1 no headroom",
        ),
        figure("quality-sft-kl-vs-base", sft["kl"], "nats/token", "untrained pruned student", base["kl"], "< 1"),
        figure("quality-api-kl-vs-local", api["kl"], "nats/token", "sparse with local top-k", sparse["kl"], "~ 1"),
        figure("quality-api-f1-vs-local", api["f1"], "F1", "sparse with local top-k", sparse["f1"], "~ 1"),
    ]
