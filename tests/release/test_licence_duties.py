"""Licence duties from the base's and the teacher's metadata: Llama's terms where Llama was used, else the base's."""

from pathlib import Path

from alambic.models.embedded import embedded_gguf
from alambic.release.licence import (
    LLAMA_NOTICE,
    facts_from_gguf,
    facts_from_name,
    facts_from_transformers,
    licence_duties,
)


def model_dir(root: Path, name: str, front_matter: str | None) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(f'{{"_name_or_path": "{name}", "model_type": "llama"}}', encoding="utf-8")
    if front_matter is not None:
        (root / "README.md").write_text(f"---\n{front_matter}\n---\n# {name}\n", encoding="utf-8")
    return root


def test_the_embedded_models_are_apache_despite_their_llama_architecture() -> None:
    smollm = facts_from_gguf(embedded_gguf())
    assert smollm.licence == "apache-2.0" and not smollm.is_llama
    duties = licence_duties("shop-student", smollm, smollm)
    assert (duties.licence, duties.name, duties.files) == ("apache-2.0", "shop-student", {})
    assert duties.card_lines == [f"Licensed as its base model, {smollm.name}: apache-2.0."]


def test_a_llama_teacher_over_the_api_brings_the_llama_licence_duties() -> None:
    smollm = facts_from_gguf(embedded_gguf())
    duties = licence_duties("shop-student", smollm, facts_from_name("meta-llama/Llama-3.1-405B-Instruct"))
    assert duties.licence == "llama3.1" and duties.llama_from == ["teacher"]
    assert duties.name == "Llama-shop-student"
    assert duties.files["NOTICE"] == LLAMA_NOTICE
    assert duties.files["LICENSE"].lstrip().startswith("LLAMA 3.1 COMMUNITY LICENSE AGREEMENT")
    assert "**Built with Llama.**" in duties.card_lines
    assert "https://llama.meta.com/llama3_1/use-policy" in duties.card_lines[1]
    assert licence_duties("Llama-shop", smollm, facts_from_name("llama3.1:70b")).name == "Llama-shop"


def test_a_local_base_is_judged_by_its_model_card_not_its_name(tmp_path: Path) -> None:
    llama = model_dir(tmp_path / "base", "my-finetune", "license: llama3.2\nbase_model:\n- meta-llama/Llama-3.2-1B")
    tinyllama = model_dir(tmp_path / "tiny", "TinyLlama/TinyLlama-1.1B-Chat", "license: apache-2.0")
    unknown = model_dir(tmp_path / "plain", "acme/support-3", None)
    teacher = facts_from_name("Qwen/Qwen2.5-72B-Instruct")
    assert licence_duties("s", facts_from_transformers(llama), teacher).llama_from == ["base"]
    assert licence_duties("s", facts_from_transformers(tinyllama), teacher).licence == "apache-2.0"
    assert licence_duties("s", facts_from_transformers(unknown), teacher).licence == "other"
    assert not teacher.is_llama
