"""The recipe mix against the loopback mock teacher: counts filled, chat format, splits, imports, lineage."""

import json
import shutil
import sqlite3
from pathlib import Path

from alambic.dataset import latest_synth_run, split_items
from alambic.facts import HANDOFF, answer_facts
from alambic.persona import read_replies, reply_messages
from alambic.prompts import Prompts
from alambic.store import Ledger
from alambic.synth.recipes import recipe_targets
from alambic.text import contains

from ..conftest import FULL_MIX, mock_teacher, run_cli, small_config, write_project

IMPORT_JSONL = [
    {
        "id": "t-1",
        "messages": [
            {"role": "user", "content": "Do you sell decaf?"},
            {"role": "assistant", "content": "Yes, a Swiss-water decaf."},
        ],
    },
    "{not json",
    {"messages": [{"role": "assistant", "content": "Hello"}]},
    {
        "id": "t-4",
        "messages": [
            {"role": "user", "content": "هل لديكم قهوة منزوعة الكافيين؟"},
            {"role": "assistant", "content": "نعم، لدينا."},
        ],
    },
]


def mix_project(root: Path, url: str, tiny_model_dir: Path, concurrency: int = 8, extra: str = "") -> Path:
    teacher = f"backend = 'openai'\nbase_url = '{url}'\nmodel = 'mock'\nconcurrency = {concurrency}"
    project = write_project(root, small_config(tiny_model_dir, synth=FULL_MIX + extra, teacher=teacher))
    logs = project / "logs"
    logs.mkdir()
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in IMPORT_JSONL]
    (logs / "chats.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (logs / "faq.csv").write_text('question,answer\n"Where are you?","On Harbour Street, 12."\n', encoding="utf-8")
    return project


def test_targets_split_by_weight_and_add_up() -> None:
    assert recipe_targets({"grounded-qa": 0.8, "safety": 0.05, "dialogue": 0.15}, 100) == {
        "grounded-qa": 80,
        "safety": 5,
        "dialogue": 15,
    }
    assert sum(recipe_targets({"a": 1, "b": 1, "c": 1}, 10).values()) == 10
    assert recipe_targets({"a": 1.0, "b": 0.0}, 7) == {"a": 7}


def test_every_recipe_fills_its_count_in_chat_format(tmp_path: Path, tiny_model_dir: Path) -> None:
    extra = 'import_paths = ["logs/chats.jsonl", "logs/faq.csv"]\n'
    with mock_teacher() as url:
        project = mix_project(tmp_path / "mix", url, tiny_model_dir, extra=extra)
        run_cli("synth", "--project", project)
    with Ledger(project / ".alambic" / "ledger.sqlite") as ledger:
        run = latest_synth_run(ledger)
        recipes = run.summary["recipes"]
        for name, target in recipe_targets(_weights(), 48).items():
            assert recipes[name]["selected"] == target, name
        assert recipes["import"]["selected"] == 3
        data = split_items(ledger, run)
        items = data["train"] + data["heldout"]
        assert len(items) == 48 + 3 + recipes["faq"]["selected"] and recipes["faq"]["selected"]
        for item in items:
            roles = [m["role"] for m in item.payload["messages"]]
            assert roles[0] == "system" and roles[1:] == ["user", "assistant"] * (len(roles[1:]) // 2), item.kind
        heldout_chunks = {i.payload["chunk"] for i in data["heldout"]}
        evolved = [i for i in items if i.kind == "evol-instruct"]
        assert evolved and all(i.payload.get("chunk") not in heldout_chunks for i in evolved)
        assert all(ledger.item(i.payload["evolved_from"]).kind in ("qa", "self-instruct") for i in evolved)
        assert all(len(i.payload["messages"]) >= 5 for i in items if i.kind == "dialogue")
        assert {i.payload["id"] for i in items if i.kind == "import" and i.payload["id"]} == {"t-1", "t-4"}
        rejected = {i.payload["source"]["line"]: i.reason for i in ledger.items("synth", "import", "rejected")}
        assert rejected[2].startswith("malformed_row: invalid JSON") and rejected[3].startswith("malformed_row: turns")
        documents = {i.key for i in ledger.items("synth", "document")}
        grounded = [i for i in items if i.payload.get("chunk")]
        assert {i.kind for i in grounded} >= {"qa", "dialogue", "evol-instruct"}
        assert all(ledger.ancestors(i.key) & documents for i in grounded)
        usage = {recipe for _, recipe, *_ in ledger.usage()}
        assert usage == {"grounded-qa", "self-instruct", "evol-instruct", "dialogue", "persona-voice", "safety", "fact"}
        # Every selected item grounded in one chunk and answering one question has its fact, checked in the chunk.
        asked = [i for i in items if i.kind in ("qa", "evol-instruct") and i.payload.get("chunk")]
        facts = answer_facts(ledger, Prompts(project), [i.key for i in asked])
        assert len(facts) >= 0.8 * len(asked) and HANDOFF in facts.values() and set(facts) <= {i.key for i in asked}
        chunks = {i.key: i.payload["text"] for i in ledger.items("synth", "chunk")}
        assert all(f == HANDOFF or contains(chunks[i.payload["chunk"]], f) for i in asked if (f := facts[i.key]))
        assert sum(run.summary["facts"].values()) == len(asked) and run.summary["facts"]["checked"] > 0


def test_selection_does_not_depend_on_concurrency(tmp_path: Path, tiny_model_dir: Path) -> None:
    selected = []
    with mock_teacher() as url:
        for concurrency in (1, 32):
            project = mix_project(tmp_path / f"c{concurrency}", url, tiny_model_dir, concurrency)
            run_cli("synth", "--project", project)
            with Ledger(project / ".alambic" / "ledger.sqlite") as ledger:
                data = split_items(ledger, latest_synth_run(ledger))
                selected.append({split: [i.key for i in items] for split, items in data.items()})
    assert selected[0] == selected[1]


def _weights() -> dict[str, float]:
    import tomllib

    return tomllib.loads(FULL_MIX)["recipes"]


def test_the_creators_own_replies_are_trained_on_and_shown_to_the_teacher(tmp_path: Path, tiny_model_dir: Path) -> None:
    creator = Path(__file__).parents[2] / "src/alambic/examples/creator"
    synth = 'target = 6\nmax_chunks = 2\nrecipes = { "persona-voice" = 1.0 }\n'
    synth += '[synth.persona]\ncreator = "Layla Haddad"\nposts_file = "posts.txt"\nreplies_file = "voice/replies.jsonl"'
    with mock_teacher() as url:
        teacher = f"backend = 'openai'\nbase_url = '{url}'\nmodel = 'mock'"
        project = write_project(tmp_path / "creator", small_config(tiny_model_dir, synth=synth, teacher=teacher))
        shutil.copy(creator / "posts.txt", project)
        shutil.copytree(creator / "voice", project / "voice")
        run_cli("synth", "--project", project)
    replies = read_replies(project / "voice" / "replies.jsonl")
    with Ledger(project / ".alambic" / "ledger.sqlite") as ledger:
        train = split_items(ledger, latest_synth_run(ledger))["train"]
    with sqlite3.connect(project / ".alambic" / "ledger.sqlite") as db:
        asked = [json.loads(row[0]) for row in db.execute("SELECT request FROM responses")]
    own = [item.payload["messages"] for item in train if item.kind == "import"]
    assert sorted(m[-1]["content"] for m in own) == sorted(r.reply for r in replies if not r.heldout)
    first = next(m for m in own if m[-1]["content"] == replies[0].reply)
    assert first[:2] == reply_messages("Layla Haddad", replies[0].post, replies[0].comment)
    assert sum(item.kind == "persona-voice" for item in train) == 6
    prompts = [message["content"] for request in asked for message in request["messages"]]
    shown = [r for r in replies if any(r.reply in prompt for prompt in prompts)]
    assert len(shown) == 6 and not any(r.heldout for r in shown)  # her voice, never the held-out replies
