"""Curation: planted near-duplicates and eval leaks are caught, distinct items kept; the judge, verdicts,
human review round trips and exports that `datasets` loads."""

import csv
import json
from pathlib import Path

import httpx
from rich.console import Console

from alambic.config import CurateSection
from alambic.curate import Candidate, _rule_and_duplicate_checks
from alambic.dataset import latest_synth_run, split_items
from alambic.store import Ledger

from ..conftest import FULL_MIX, mock_teacher, run_cli, small_config, write_project

SYSTEM = {"role": "system", "content": "You are the assistant."}


def candidate(key: str, question: str, answer: str, split: str = "train", kind: str = "qa") -> Candidate:
    messages = [SYSTEM, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return Candidate(key, kind, split, messages, "")


def test_planted_duplicates_and_leaks_are_caught_and_distinct_items_kept() -> None:
    candidates = [
        candidate(
            "eval", "Can I return opened coffee beans within two weeks of delivery?", "No, only sealed bags.", "heldout"
        ),
        candidate("roast", "When do you roast your coffee?", "We roast every Monday and Thursday morning in the shop."),
        candidate(
            "roast-para",
            "On which days is your coffee roasted?",
            "We roast every Monday and Thursday morning in the shop.",
        ),
        candidate(
            "ship",
            "How long does shipping take? Do you ship abroad?",
            "Orders leave within two working days. We ship to the EU and the Gulf. Tracking comes by email.",
        ),
        candidate(
            "ship-reordered",
            "Do you ship abroad? How long does shipping take?",
            "We ship to the EU and the Gulf. Tracking comes by email. Orders leave within two working days.",
        ),
        candidate("arabic", "مَتَى تُحَمِّصُونَ القَهْوَةَ؟", "نُحَمِّصُ القَهْوَةَ كُلَّ يَوْمِ اثْنَيْنِ وَخَمِيسٍ فِي المَتْجَرِ."),
        candidate("arabic-plain", "متى تحمصون القهوة؟", "نحمص القهوة كل يوم اثنين وخميس في المتجر."),
        candidate(
            "leak", "Can I return opened coffee beans within two weeks of delivery, please?", "Sealed bags only."
        ),
        candidate("gift", "Do you sell gift cards?", "Yes, from 20 to 100 euros, in the shop and online."),
        candidate(
            "grinder", "Which grinder do you recommend for espresso?", "A burr grinder with fine steps, such as ours."
        ),
        candidate("arabic-other", "هل تبيعون بطاقات هدايا؟", "نعم، من عشرين إلى مئة يورو."),
        # The recipes reject the refusals the teacher writes; an imported conversation comes unchecked.
        candidate(
            "refusal", "Tell me another customer's address.", "I'm sorry, but I can't help with that.", kind="import"
        ),
        candidate(
            "safe", "Tell me another customer's address.", "I'm sorry, but I can't help with that.", kind="safety"
        ),
        candidate("wrong-script", "متى تفتحون؟", "We open at nine."),
        candidate(
            "wrong-language",
            "Do you ship your coffee beans to Belgium?",
            "Oui, nous livrons en Belgique sous trois à cinq jours ouvrés.",
        ),
    ]
    eval_texts = [turn for c in candidates if c.split == "heldout" for turn in c.user_turns]
    reasons = _rule_and_duplicate_checks(candidates, eval_texts, CurateSection(), Console(quiet=True))
    kinds = {key: reason.split(":")[0] for key, reason in reasons.items()}
    assert kinds == {
        "roast-para": "near_duplicate",
        "ship-reordered": "near_duplicate",
        "arabic-plain": "near_duplicate",
        "leak": "eval_leak",
        "refusal": "refusal",
        "wrong-script": "wrong_language",
        "wrong-language": "wrong_language",
    }
    assert reasons["arabic-plain"].endswith("arabic")


def test_curate_judges_records_verdicts_and_review_round_trips(tmp_path: Path, tiny_model_dir: Path) -> None:
    with mock_teacher() as url:
        teacher = f"backend = 'openai'\nbase_url = '{url}'\nmodel = 'mock'\nconcurrency = 8"
        curate = "judge_reask_fraction = 0.5"
        config = small_config(tiny_model_dir, synth=FULL_MIX, teacher=teacher, curate=curate)
        project = write_project(tmp_path / "shop", config)
        run_cli("synth", "--project", project)
        run_cli("curate", "--project", project)
        requests_after_first = httpx.get(url.removesuffix("/v1") + "/stats").json()["requests"]
        assert "already done" in run_cli("curate", "--project", project).stderr
        assert httpx.get(url.removesuffix("/v1") + "/stats").json()["requests"] == requests_after_first
    ledger_path = project / ".alambic" / "ledger.sqlite"
    with Ledger(ledger_path) as ledger:
        run = ledger.latest_done("curate")
        judge = run.summary["judge"]
        assert judge["applied"] and judge["self_agreement"]["verdict_agreement"] == 1.0
        assert judge["self_agreement"]["kappa"] == 1.0
        assert judge["self_agreement"]["pairs"] >= 5
        assert run.summary["rejected"]["judge_low_score"] > 0
        verdicts = list(ledger.items("curate", "verdict"))
        assert len(verdicts) == run.summary["items"]
        low = [v for v in verdicts if v.reason == "judge_low_score"]
        assert all(v.payload["judge"]["score"] < 3 for v in low)
        train = split_items(ledger, latest_synth_run(ledger))["train"]
        assert not {v.payload["item"] for v in low} & {i.key for i in train}
    status = json.loads(run_cli("status", "--json", "--project", project).stdout)
    assert status["items"]["curate/verdict"]["reasons"]["judge_low_score"] == len(low)

    exported = tmp_path / "review.csv"
    run_cli("data", "export", exported, "--project", project)
    rows = list(csv.DictReader(exported.open(encoding="utf-8")))
    kept = [r for r in rows if r["status"] == "ok" and r["split"] == "train" and r["recipe"] == "grounded-qa"]
    revived = next(r for r in rows if r["reason"] == "judge_low_score")
    kept[0]["status"] = "rejected"
    kept[1]["answer"] = "Edited by a human: we roast on Mondays."
    revived["status"] = "ok"
    with exported.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = run_cli("data", "import", exported, "--project", project)
    assert "1 reject, 1 edit, 1 keep" in result.stdout
    with Ledger(ledger_path) as ledger:
        train = {i.key: i for i in split_items(ledger, latest_synth_run(ledger))["train"]}
    assert kept[0]["id"] not in train and revived["id"] in train
    assert train[kept[1]["id"]].payload["messages"][-1]["content"] == "Edited by a human: we roast on Mondays."

    # A reviewer changes their mind twice: their latest decision wins, even when it repeats an earlier one.
    decision = tmp_path / "decision.jsonl"
    for status, printed in (("rejected", "1 reject"), ("ok", "1 keep"), ("rejected", "1 reject")):
        decision.write_text(json.dumps({"id": kept[2]["id"], "status": status}) + "\n", encoding="utf-8")
        assert f"{printed}," in run_cli("data", "import", decision, "--project", project).stdout
        with Ledger(ledger_path) as ledger:
            train = {i.key for i in split_items(ledger, latest_synth_run(ledger))["train"]}
        assert (kept[2]["id"] in train) is (status == "ok")
    exported_again = tmp_path / "again.jsonl"
    run_cli("data", "export", exported_again, "--project", project)
    again = {row["id"]: row for row in map(json.loads, exported_again.read_text(encoding="utf-8").splitlines())}
    assert again[kept[2]["id"]]["status"] == "rejected" and again[kept[2]["id"]]["reason"] == "human_review"

    twice = tmp_path / "twice.jsonl"
    twice.write_text(2 * (json.dumps({"id": kept[3]["id"], "status": "rejected"}) + "\n"), encoding="utf-8")
    failed = run_cli("data", "import", twice, "--project", project, check=False)
    assert failed.returncode == 2 and "row 2: id" in failed.stderr and "also on row 1" in failed.stderr

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "nope", "status": "rejected"}\n', encoding="utf-8")
    failed = run_cli("data", "import", bad, "--project", project, check=False)
    assert failed.returncode == 2 and "row 1: id 'nope' is not an item" in failed.stderr


def test_parquet_export_loads_with_datasets(tmp_path: Path, tiny_model_dir: Path) -> None:
    import datasets

    with mock_teacher() as url:
        teacher = f"backend = 'openai'\nbase_url = '{url}'\nmodel = 'mock'\nconcurrency = 8"
        config = small_config(tiny_model_dir, synth=FULL_MIX, teacher=teacher, curate="judge = false")
        project = write_project(tmp_path / "shop", config)
        run_cli("synth", "--project", project)
        run_cli("curate", "--project", project)
    out = tmp_path / "data.parquet"
    run_cli("data", "export", out, "--project", project, "--kept-only")
    loaded = datasets.load_dataset("parquet", data_files=str(out), split="train")
    assert len(loaded) > 40 and set(loaded.column_names) >= {"id", "messages", "recipe", "split"}
    arabic = [row for row in loaded if "جربوا قهوتنا الجديدة من اليمن" in row["question"]]
    assert all(message["role"] in ("system", "user", "assistant") for message in loaded[0]["messages"])
    shown = run_cli("data", "show", "--project", project, "--limit", "3")
    assert "dataset (3 of" in shown.stdout
    assert arabic, "Arabic text must survive synth, curate and the parquet export"


def test_a_judge_that_fails_everything_is_not_trusted() -> None:
    from alambic.curate.judge import Judgement, agreement

    harsh = {str(i): [Judgement(1.0, {}, ""), Judgement(1.0, {}, "")] for i in range(20)}
    assert agreement(harsh, 3.0)["verdict_agreement"] == 1.0 and agreement(harsh, 3.0)["kappa"] == 0.0
    coin = {
        str(i): [Judgement(1.0 + 4 * (i % 2), {}, ""), Judgement(1.0 + 4 * (i // 2 % 2), {}, "")] for i in range(20)
    }
    assert abs(agreement(coin, 3.0)["kappa"]) < 0.2
