"""synth against a loopback mock teacher (fixed latency, 64 completion tokens) and the real embedded
teacher behind llama-cpp-python's server. Every ratio is against a peer or ideal measured in this run."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import free_port, mock_teacher, serving  # noqa: E402

from figures import figure  # noqa: E402

LATENCY = 0.2
PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"  # `make peers` builds it


def paid_requests(ledger: Path) -> list[dict]:
    """Every request whose response synth paid for, as it was sent (messages and sampling)."""
    db = sqlite3.connect(ledger)
    try:
        return [json.loads(row[0]) for row in db.execute("SELECT request FROM responses ORDER BY created_at")]
    finally:
        db.close()


def make_project(root: Path, base_url: str, model: str, concurrency: int, chunks: int, extra: str = "") -> Path:
    """A project of `chunks` small sections; each costs two teacher requests (one question, one answer)."""
    (root / "docs").mkdir(parents=True)
    sections = "\n\n".join(f"## Topic {i}\n\nFact number {i}: parcel {i} leaves on day {i % 7}." for i in range(chunks))
    (root / "docs" / "facts.md").write_text(f"# Facts\n\n{sections}\n", encoding="utf-8")
    (root / "alambic.toml").write_text(
        f'[teacher]\nbackend = "openai"\nbase_url = "{base_url}"\nmodel = "{model}"\nconcurrency = {concurrency}\n'
        f"{extra}\n[synth]\nquestions_per_chunk = 1\nmax_rounds = 1\nheldout_fraction = 0.0\n"
        'recipes = { "grounded-qa" = 1.0 }\n'
        "max_answer_tokens = 64\n",
        encoding="utf-8",
    )
    return root


def timed_synth(project: Path) -> dict:
    """Run `alambic synth` in a child process; returns its wall time, peak RSS and request count."""
    script = (
        "import json, resource, sys, time\n"
        "from pathlib import Path\n"
        "from rich.console import Console\n"
        "from alambic import synth\nfrom alambic.project import Project\n"
        "project = Project.open(Path(sys.argv[1]))\n"
        "began, cpu_began = time.monotonic(), time.process_time()\n"
        "report = synth.run(project, Console(quiet=True))\n"
        "seconds = time.monotonic() - began\n"
        "requests = sum(row[2] for row in project.ledger.usage())\n"
        "tokens = sum(row[4] for row in project.ledger.usage())\n"
        "cpu = time.process_time() - cpu_began\n"
        "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "print(json.dumps({'seconds': seconds, 'requests': requests, 'tokens': tokens, 'rss': rss, 'cpu': cpu}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(project)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def vs_ideal(tmp: Path) -> list[dict]:
    figures = []
    with mock_teacher(latency=LATENCY, tokens=64) as url:
        for in_flight in (16, 64, 256):
            # About sixteen seconds of ideal work at each level, so that start-up and the last, partly
            # filled wave of groups (a long run's steady state has neither) are a small share.
            chunks = max(200, int(in_flight / LATENCY * 16 / 2))
            result = timed_synth(make_project(tmp / f"ideal-{in_flight}", url, "mock", in_flight, chunks))
            ideal = in_flight / LATENCY
            figures.append(
                figure(
                    f"synth-vs-ideal-{in_flight}",
                    result["requests"] / result["seconds"],
                    "requests/s",
                    f"ideal ({in_flight} in flight / {LATENCY}s)",
                    ideal,
                    ">=0.9 until client CPU-bound",
                )
            )
            # Where the client's CPU becomes the bound: CPU seconds per wall second of synth (1.0 = one core).
            cpu = result["cpu"] / result["seconds"]
            figures.append(
                figure(f"synth-client-cpu-{in_flight}", cpu, "cores busy", "one core", 1.0, "<1 (not CPU-bound)")
            )
    return figures


def memory(tmp: Path) -> list[dict]:
    rss = {}
    with mock_teacher(latency=0.002, tokens=64) as url:
        for items in (1_000, 20_000):
            result = timed_synth(make_project(tmp / f"mem-{items}", url, "mock", 64, items // 2))
            rss[items] = result
    small, large = rss[1_000], rss[20_000]
    return [
        figure(
            "synth-memory-20k-vs-1k", large["rss"] / 2**20, "MiB peak RSS", "1k items", small["rss"] / 2**20, "<=1.2"
        ),
        figure(
            "synth-time-20k-vs-1k",
            large["seconds"],
            "s",
            "1k items x 20 (linear)",
            small["seconds"] * 20,
            "~1.0 (linear)",
        ),
    ]


def vs_llama_server(tmp: Path) -> list[dict]:
    """alambic's completion tokens/s through the server vs the server's own, both at the same parallelism."""
    port = free_port()
    command = [sys.executable, "-m", "alambic", "teacher", "serve", "--port", str(port)]
    with serving(command, port) as base:
        result = timed_synth(
            make_project(tmp / "llama", base, "teacher", 1, 12, "extra_body = { repeat_penalty = 1.0 }")
        )
        ours = result["tokens"] / result["seconds"]
        # The server alone: exactly the requests synth sent, replayed back to back by a bare HTTP client.
        requests = paid_requests(tmp / "llama" / ".alambic" / "ledger.sqlite")
        tokens, began = 0, time.monotonic()
        with httpx.Client(timeout=120) as client:
            for request in requests:
                sampling = request["sampling"]
                body = {
                    "messages": request["messages"],
                    "temperature": sampling["temperature"],
                    "top_p": sampling["top_p"],
                    "max_tokens": sampling["max_tokens"],
                    "seed": sampling["seed"],
                    "repeat_penalty": 1.0,
                }
                tokens += client.post(f"{base}/chat/completions", json=body).json()["usage"]["completion_tokens"]
        raw = tokens / (time.monotonic() - began)
    return [figure("synth-vs-llama-server", ours, "completion tok/s", "llama-cpp-python server, raw", raw, ">=0.9")]


def distilabel_synth(requests: list[dict], base_url: str, in_flight: int, work: Path) -> dict:
    """Send `requests` through distilabel (bench/peers/distilabel_synth.py, in the peers' venv); returns its
    timing and counts, plus how many HTTP requests reached the mock teacher (retries included)."""
    (work / "requests.json").write_text(json.dumps(requests), encoding="utf-8")
    stats = base_url.removesuffix("/v1") + "/stats"
    before = httpx.get(stats).json()["requests"]
    script = REPO / "bench" / "peers" / "distilabel_synth.py"
    command = [str(PEERS_PYTHON), str(script), str(work / "requests.json"), base_url, str(in_flight), str(work)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result | {"attempts": httpx.get(stats).json()["requests"] - before}


def vs_distilabel(tmp: Path) -> list[dict]:
    """Completed generations/s of alambic's synth vs distilabel's TextGeneration on the same mock teacher, with the
    same requests (distilabel gets the messages alambic sent, read back from its ledger) and 64 in flight for both.

    Each side runs in its own process and is timed around its run call alone: synth.run for alambic (including its
    own set-up: reading and chunking the documents, opening the ledger run and the client) and Pipeline.run for
    distilabel (including its set-up: worker processes, loading the task and its client, and building the Distiset
    it returns; the peer label says how much of it was start-up). Neither includes the interpreter start nor imports.
    """
    in_flight, work = 64, tmp / "distilabel"
    with mock_teacher(latency=LATENCY, tokens=64) as url:
        ours = timed_synth(make_project(work / "project", url, "mock", in_flight, int(in_flight / LATENCY * 8 / 2)))
        requests = paid_requests(work / "project" / ".alambic" / "ledger.sqlite")
        theirs = distilabel_synth(requests, url, in_flight, work)
    peer = (
        f"distilabel 1.5.3 TextGeneration, input_batch_size {in_flight} ({theirs['startup']:.1f}s of start-up, "
        f"{theirs['generations']}/{len(requests)} generated in {theirs['attempts']} requests)"
    )
    rate = theirs["generations"] / theirs["seconds"]
    return [figure("synth-vs-distilabel", ours["requests"] / ours["seconds"], "generations/s", peer, rate, ">=1.5")]


def run() -> list[dict]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        return vs_ideal(Path(tmp)) + vs_distilabel(Path(tmp)) + memory(Path(tmp)) + vs_llama_server(Path(tmp))
