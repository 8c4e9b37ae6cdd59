"""The OpenAI-compatible teacher client against a loopback mock that injects faults."""

import json
import sqlite3
import time
from pathlib import Path

import httpx

from alambic.models.openai import CircuitBreaker, retry_after_seconds
from alambic.store import Ledger

from ..conftest import ALAMBIC, FULL_MIX, free_port, mock_teacher, run_cli, small_config, write_project
from ..test_resume import kill_when


def teacher(urls: list[str], concurrency: int = 8, stream: bool = False) -> str:
    return (
        f"backend = 'openai'\nbase_url = {json.dumps(urls)}\nmodel = 'mock'\ntimeout_s = 1.0\n"
        f"concurrency = {concurrency}\nmax_retries = 8\nbackoff_s = 0.02\nstream = {str(stream).lower()}"
    )


def synth_items(project: Path) -> dict[str, tuple]:
    """Every item of every recipe (and the intermediate ones: questions, tasks, requests, comments)."""
    with Ledger(project / ".alambic" / "ledger.sqlite") as ledger:
        return {
            i.key: (i.kind, i.status, i.reason, i.payload.get("answer"), i.payload.get("messages"))
            for i in ledger.items("synth")
            if i.run_id != "-"
        }


def test_retry_after_accepts_seconds_and_dates() -> None:
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "2.5"})) == 2.5
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < retry_after_seconds(httpx.Response(429, headers={"Retry-After": future})) <= 30
    assert retry_after_seconds(httpx.Response(429)) is None


def test_circuit_breaker_opens_then_lets_one_probe_through() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown_s=10)
    for _ in range(3):
        assert breaker.available(0)
        breaker.on_failure(0)
    assert not breaker.available(5)
    assert breaker.available(10)
    breaker.on_attempt()
    assert not breaker.available(10.1)  # only one probe at a time
    breaker.on_failure(10.2)
    assert not breaker.available(15)
    breaker.on_attempt()
    breaker.on_success()
    assert breaker.available(15) and breaker.failures == 0


def test_twenty_percent_faults_lose_and_duplicate_nothing(tmp_path: Path, tiny_model_dir: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with mock_teacher(fault_rate=0.0) as clean_url:
        clean = write_project(
            tmp_path / "clean", small_config(tiny_model_dir, synth=FULL_MIX, teacher=teacher([clean_url]))
        )
        run_cli("synth", "--project", clean)
    with mock_teacher(fault_rate=0.2, hang=3.0) as faulty_url:
        # Streamed (server-sent events), so that the cut-short fault cuts streams.
        config = small_config(tiny_model_dir, synth=FULL_MIX, teacher=teacher([faulty_url, dead], stream=True))
        faulty = write_project(tmp_path / "faulty", config)
        run_cli("synth", "--project", faulty)
        stats = httpx.get(faulty_url.removesuffix("/v1") + "/stats").json()
    assert set(stats["faults"]) == {"429", "500", "503", "hang", "malformed", "cut"}
    expected = synth_items(clean)
    kinds = {kind for kind, *_ in expected.values()}
    assert {"qa", "self-instruct", "evol-instruct", "dialogue", "persona-voice", "safety"} <= kinds
    assert synth_items(faulty) == expected
    with Ledger(clean / ".alambic" / "ledger.sqlite") as ledger:
        paid = sum(row[2] for row in ledger.usage())
    assert len(stats["answered_seeds"]) == len(set(stats["answered_seeds"])) == paid


def test_killed_run_never_resends_a_stored_request(tmp_path: Path, tiny_model_dir: Path) -> None:
    synth = FULL_MIX
    with mock_teacher(latency=0.2) as url:
        straight = write_project(tmp_path / "a", small_config(tiny_model_dir, synth=synth, teacher=teacher([url], 4)))
        run_cli("synth", "--project", straight)
        killed = write_project(tmp_path / "b", small_config(tiny_model_dir, synth=synth, teacher=teacher([url], 4)))
        ledger_path = killed / ".alambic" / "ledger.sqlite"

        def stored() -> int:
            try:
                with sqlite3.connect(ledger_path, timeout=10) as db:
                    return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
            except sqlite3.OperationalError:
                return 0

        kill_when([*ALAMBIC, "synth", "--project", str(killed)], lambda: stored() >= 20)
        with sqlite3.connect(ledger_path) as db:
            paid = {
                json.loads(request)["sampling"]["seed"] for (request,) in db.execute("SELECT request FROM responses")
            }
        httpx.post(url.removesuffix("/v1") + "/reset")
        run_cli("synth", "--project", killed)
        resent = httpx.get(url.removesuffix("/v1") + "/stats").json()["answered_seeds"]
    assert paid and not paid & set(resent)
    assert synth_items(killed) == synth_items(straight)


def test_streamed_answers_keep_their_top_logprobs(tmp_path: Path, tiny_model_dir: Path) -> None:
    synth = FULL_MIX + "logprobs = 3\n"
    with mock_teacher(tokens=16) as url:
        project = write_project(
            tmp_path / "lp", small_config(tiny_model_dir, synth=synth, teacher=teacher([url], stream=True))
        )
        run_cli("synth", "--project", project)
    with Ledger(project / ".alambic" / "ledger.sqlite") as ledger:
        answers = list(ledger.items("synth", "qa", "ok"))
        assert answers
        for item in answers:
            tokens = ledger.logprobs(item.payload["response"])
            assert tokens is not None and len(tokens) == 16
            assert all(len(token["top_logprobs"]) == 3 for token in tokens)
            assert item.payload["answer"]
