"""The served API on a released project (SERVE_PROJECT, default demo-shop: run `make demo` first), on loopback.

- serve-overhead-vs-llamacpp: `alambic serve` (with its key check, budgets, queue and guard) answering model
  `student` one request at a time, against llama-cpp-python's own server on the same GGUF, same prompts, greedy.
  The peer keeps its default of half the cores: given all of them it was slower here, as each request runs on
  another worker thread, which starts another team of llama.cpp's OpenMP threads.
- Load: 64 clients for 60 s against `agent`, each asking again as soon as it is answered. Every status but 200
  and the intended 429/503 is an error. p50/p95 latency, answers/s and tokens/s, against one client alone.
- proxy-overhead-vs-direct: the same prompts through `alambic proxy` (which stores every exchange) against
  straight to the teacher (the embedded one, served by llama.cpp).

The bench makes an API key "bench" with a high budget in the project, and revokes it at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from alambic.models.embedded import embedded_gguf
from alambic.project import Project
from alambic.results import ReleaseResult
from alambic.serve.keys import create_key
from figures import figure
from servers import free_port, server

CLIENTS = int(os.environ.get("SERVE_CLIENTS", "64"))
LOAD_SECONDS = float(os.environ.get("SERVE_LOAD_SECONDS", "60"))
MAX_TOKENS = 48
PROMPTS = [
    "When do you roast your coffee?",
    "Do you ship to Egypt?",
    "What grind should I use for a moka pot?",
    "Can I return an opened bag of beans?",
    "How long does delivery take?",
    "هل تشحنون إلى مصر؟",
]
ROUNDS = 3


def alambic(*args: str, port: int) -> list[str]:
    return [sys.executable, "-m", "alambic", *args, "--port", str(port)]


def request_body(model: str, prompt: str) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "repeat_penalty": 1.0,  # llama-cpp-python's server defaults to 1.1, llama.cpp's chat call to 1.0
    }


def one_at_a_time(urls: list[str], model: str, key: str | None) -> list[tuple[float, int]]:
    """For each server, seconds per answer and completion tokens over ROUNDS passes of PROMPTS (after a warm-up
    answer), the servers taking turns at each prompt, so that the machine's drift falls on all of them alike, and
    first and second in turn (a server that shares its model with another finds the prompt already read)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    seconds, tokens = [0.0] * len(urls), [0] * len(urls)
    with httpx.Client(timeout=300, headers=headers) as client:
        for url in urls:
            client.post(f"{url}/v1/chat/completions", json=request_body(model, PROMPTS[0])).raise_for_status()
        for _ in range(ROUNDS):
            for number, prompt in enumerate(PROMPTS):
                order = list(enumerate(urls))
                for index, url in order if number % 2 == 0 else order[::-1]:
                    began = time.monotonic()
                    reply = client.post(f"{url}/v1/chat/completions", json=request_body(model, prompt))
                    reply.raise_for_status()
                    seconds[index] += time.monotonic() - began
                    tokens[index] += reply.json()["usage"]["completion_tokens"]
    answers = ROUNDS * len(PROMPTS)
    return [(total / answers, count) for total, count in zip(seconds, tokens, strict=True)]


async def load(url: str, key: str, clients: int, seconds: float) -> dict:
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    tokens = 0
    stop_at = time.monotonic() + seconds

    async def client_loop(number: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens
        turn = 0
        while time.monotonic() < stop_at:
            prompt = PROMPTS[(number + turn) % len(PROMPTS)]
            body = {"model": "agent", "user": f"load-{number}", "messages": [{"role": "user", "content": prompt}]}
            began = time.monotonic()
            try:
                reply = await http.post(f"{url}/v1/chat/completions", json=body)
                status = reply.status_code
            except httpx.HTTPError:
                status = -1
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(time.monotonic() - began)
                tokens += reply.json()["usage"]["completion_tokens"]
            elif status in (429, 503):
                await asyncio.sleep(min(float(reply.headers.get("Retry-After", "1")), 5))
            turn += 1

    limits = httpx.Limits(max_connections=clients + 8)
    async with httpx.AsyncClient(timeout=600, limits=limits, headers={"Authorization": f"Bearer {key}"}) as http:
        began = time.monotonic()
        await asyncio.gather(*(client_loop(number, http) for number in range(clients)))
        elapsed = time.monotonic() - began
    latencies.sort()
    return {
        "statuses": statuses,
        "answers_per_s": len(latencies) / elapsed,
        "tokens_per_s": tokens / elapsed,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"),
    }


def proxy_figure(project_root: Path) -> dict:
    """Straight to the embedded teacher (llama.cpp's server) and through `alambic proxy`, same prompts."""
    teacher_port, proxy_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as scratch:
        capture = Path(scratch) / "capture"
        capture.mkdir()
        (capture / "alambic.toml").write_text('[project]\nname = "proxy-bench"\n', encoding="utf-8")
        with server(alambic("teacher", "serve", "--model", str(embedded_gguf()), port=teacher_port), teacher_port) as t:
            proxy_command = alambic(
                "proxy", "--project", str(capture), "--no-auth", "--teacher", f"{t}/v1", port=proxy_port
            )
            with server(proxy_command, proxy_port) as proxied:
                (direct, _), (through, _) = one_at_a_time([t, proxied], "teacher", None)
                with Project.open(capture).ledger as ledger:
                    captured = sum(1 for _ in ledger.items("proxy", "capture"))
    expected = ROUNDS * len(PROMPTS) + 1  # with the warm-up answer
    return figure(
        "proxy-overhead-vs-direct",
        through,
        "s/answer",
        "straight to the teacher",
        direct,
        f"<= 1.05 (captured {captured} of {expected} exchanges)",
    )


def run() -> list[dict]:
    root = Path(os.environ.get("SERVE_PROJECT", "demo-shop")).resolve()
    if not (root / "alambic.toml").is_file():
        raise SystemExit(f"{root}: no project; run `make demo` first, or set SERVE_PROJECT")
    project = Project.open(root)
    release = project.ledger.latest_done("release").result(ReleaseResult)
    gguf = release.gguf[project.config.serve.quant]
    name = f"bench-{int(time.time())}"
    _, key = create_key(project.ledger, name, ["chat"], {"requests_per_minute": 10**6, "tokens_per_minute": 10**8})
    figures = []
    try:
        ours_port, peer_port = free_port(), free_port()
        with server(alambic("serve", "--project", str(root), port=ours_port), ours_port) as ours:
            [(ours_seconds, ours_tokens)] = one_at_a_time([ours], "student", key)
            single = asyncio.run(load(ours, key, 1, min(LOAD_SECONDS, 20)))
            loaded = asyncio.run(load(ours, key, CLIENTS, LOAD_SECONDS))
        peer_command = alambic(
            "teacher", "serve", "--model", gguf, "--n-ctx", str(project.config.serve.n_ctx), port=peer_port
        )
        with server(peer_command, peer_port) as peer:
            [(peer_seconds, peer_tokens)] = one_at_a_time([peer], "student", None)
        same = "same" if ours_tokens == peer_tokens else f"ours {ours_tokens}, peer {peer_tokens}"
        figures.append(
            figure(
                "serve-overhead-vs-llamacpp",
                ours_seconds,
                "s/answer",
                "llama-cpp-python server",
                peer_seconds,
                f"<= 1.05 (completion tokens: {same}; ours guarded)",
            )
        )
        unintended = sum(n for status, n in loaded["statuses"].items() if status not in (200, 429, 503))
        total = sum(loaded["statuses"].values())
        codes = json.dumps({str(k): v for k, v in sorted(loaded["statuses"].items())})
        figures += [
            figure("serve-load-errors", unintended, "requests", "requests made", total, f"0 ({codes})"),
            figure(
                "serve-load-answers-per-s",
                loaded["answers_per_s"],
                "answers/s",
                "one client",
                single["answers_per_s"],
                f">= 1 ({CLIENTS} clients, {LOAD_SECONDS:g} s, agent)",
            ),
            figure(
                "serve-load-tokens-per-s",
                loaded["tokens_per_s"],
                "tokens/s",
                "one client",
                single["tokens_per_s"],
                ">= 1",
            ),
            figure(
                "serve-load-p50-latency",
                loaded["p50"],
                "s",
                "one client",
                single["p50"],
                "queueing: about the clients waiting",
            ),
            figure(
                "serve-load-p95-latency",
                loaded["p95"],
                "s",
                "one client",
                single["p95"],
                f"bounded by serve.limits.queue_size ({project.config.serve.limits.queue_size})",
            ),
        ]
    finally:
        project.ledger.revoke_api_key(name)
        project.close()
    figures.append(proxy_figure(root))
    return figures
