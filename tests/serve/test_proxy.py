"""`alambic proxy` in front of a teacher over the API (the loopback mock stands in for a remote one): every
exchange a client saw answered is in the ledger, even after a SIGKILL, and `synth.captured` trains on them."""

import os
import signal
import subprocess
from pathlib import Path

import httpx

from alambic.dataset import CAPTURE_KIND, CAPTURE_STAGE, latest_synth_run, split_items
from alambic.review import record_reviews
from alambic.store import Ledger
from tests.conftest import (
    ALAMBIC,
    GROUNDED_ONLY,
    REPO,
    free_port,
    mock_teacher,
    run_cli,
    small_config,
    wait_for_http,
    write_project,
)

QUESTIONS = ["When do you roast?", "Do you ship to Cairo?", "هل القهوة طازجة؟", "Is the grinder in stock?", "Hi"]


def test_every_answered_exchange_is_captured_and_becomes_training_data(tmp_path: Path, tiny_model_dir: Path) -> None:
    from openai import OpenAI

    with mock_teacher() as teacher_url:
        teacher = f"backend = 'openai'\nbase_url = '{teacher_url}'\nmodel = 'mock'"
        synth = f"max_chunks = 2\nquestions_per_chunk = 1\ncaptured = true\n{GROUNDED_ONLY}"
        root = write_project(tmp_path / "shop", small_config(tiny_model_dir, teacher=teacher, synth=synth))
        secret = run_cli("keys", "create", "website", "--project", root).stdout.strip().splitlines()[-1]
        port = free_port()
        command = [*ALAMBIC, "proxy", "--project", str(root), "--port", str(port)]  # the teacher from the config
        proxy = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", proxy)
            assert httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={}).status_code == 401
            client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=secret, max_retries=0)
            answers = []
            for number, question in enumerate(QUESTIONS):
                messages = [{"role": "user", "content": question}]
                if number % 2:
                    chunks = client.chat.completions.create(model="mock", messages=messages, stream=True)
                    answers.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
                else:
                    reply = client.chat.completions.create(model="mock", messages=messages)
                    answers.append(reply.choices[0].message.content)
            os.kill(proxy.pid, signal.SIGKILL)  # at once, after the last answer
            proxy.wait(timeout=30)
        finally:
            if proxy.poll() is None:
                proxy.kill()
        with Ledger(root / ".alambic" / "ledger.sqlite") as ledger:
            captured = list(ledger.items(CAPTURE_STAGE, CAPTURE_KIND))
            key_id = ledger.api_keys()[0].id
        assert [c.payload["messages"][-2:] for c in captured] == [
            [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            for q, a in zip(QUESTIONS, answers, strict=True)
        ]
        assert all(c.payload["key"] == key_id and c.payload["time"] > 0 for c in captured)
        assert [c.payload["stream"] for c in captured] == [False, True, False, True, False]
        with Ledger(root / ".alambic" / "ledger.sqlite") as ledger:  # a reviewer rejects one and edits one
            decisions = [{"id": captured[0].key, "status": "rejected"}, {"id": captured[1].key, "answer": "Edited."}]
            assert record_reviews(ledger, decisions, "test") == {"reject": 1, "edit": 1, "keep": 0, "unchanged": 0}

        run_cli("synth", "--project", root)
    with Ledger(root / ".alambic" / "ledger.sqlite") as ledger:
        run = latest_synth_run(ledger)
        assert run.summary["recipes"]["import"]["selected"] == len(QUESTIONS) - 1
        imported = [i for i in split_items(ledger, run)["train"] if i.kind == "import"]
        assert sorted(i.payload["answer"] for i in imported) == sorted([*answers[2:], "Edited."])
        assert all(ledger.parents(i.key) == [i.payload["source"]["capture"]] for i in imported)
