"""synth.answer_samples: of several answers the teacher samples for a grounded question, the one whose additions the
chunk says most is trained on. The teacher is scripted (it stands in for a remote API); the ledger is real."""

import asyncio
from pathlib import Path

from alambic.config import Config
from alambic.documents.chunking import Chunk
from alambic.models.base import Completion, Sampling
from alambic.prompts import Prompts
from alambic.store import Ledger
from alambic.synth.engine import Engine, KeyedChunk
from alambic.synth.recipes.qa import GroundedQA

CHUNK = KeyedChunk(
    "chunk-shipping",
    Chunk(
        "shipping.md",
        0,
        "UK standard delivery costs £3.95 and is free on orders over £40. Orders placed before 11:00 on a "
        "roasting day leave with coffee roasted that same morning.",
    ),
)
OTHER = KeyedChunk("chunk-cupping", Chunk("events.md", 0, "A free public cupping is held on the first Saturday."))
QUESTION = "How much is delivery in the UK?"
FILLER = "Thank you so much for reaching out to us, we are always glad to hear from our customers."
GROUNDED = "UK standard delivery costs £3.95, and it is free on orders over £40."
ELSEWHERE = "Our cupping on the first Saturday is free and open to everyone who likes coffee."


class ScriptedTeacher:
    """Answers each new seed with the next scripted text, and counts the calls it was paid for."""

    name, parallel = "scripted", 1

    def __init__(self, texts: list[str]) -> None:
        self.texts, self.by_seed = texts, {}

    async def achat(self, messages: list, sampling: Sampling) -> Completion:
        text = self.by_seed.setdefault(sampling.seed, self.texts[len(self.by_seed) % len(self.texts)])
        return Completion(text, 50, len(text.split()), "stop")

    async def aprompt_logprobs(self, text: str, top_k: int) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


def answered(root: Path, teacher: ScriptedTeacher, samples: int) -> dict:
    """The stored training item of the question, answered with `samples` samples."""
    config = Config.model_validate({"synth": {"answer_samples": samples}})
    ledger = Ledger(root / "ledger.sqlite")
    engine = Engine(config, ledger, Prompts(root), teacher, "synth-test", [CHUNK, OTHER])
    recipe = GroundedQA(engine, [CHUNK, OTHER])
    key = recipe.key("answer", CHUNK.key, QUESTION)
    assert asyncio.run(recipe.answer(key, [0, 0], "answer", QUESTION, CHUNK, [])) == 1
    engine.close()
    [item] = [item for item in ledger.items("synth", "qa") if item.payload.get("samples", 1) == samples]
    ledger.close()
    return item.payload


def test_the_answer_the_chunk_says_most_is_kept(tmp_path: Path) -> None:
    teacher = ScriptedTeacher([FILLER, GROUNDED, ELSEWHERE])
    payload = answered(tmp_path, teacher, 3)
    assert payload["answer"] == GROUNDED and payload["samples"] == 3
    assert len(teacher.by_seed) == 3 and payload["usage"] == [
        150,
        sum(len(t.split()) for t in teacher.by_seed.values()),
    ]


def test_one_sample_keeps_the_first_answer_and_more_samples_reuse_it(tmp_path: Path) -> None:
    teacher = ScriptedTeacher([FILLER, GROUNDED, ELSEWHERE])
    assert answered(tmp_path, teacher, 1)["answer"] == FILLER and len(teacher.by_seed) == 1
    assert answered(tmp_path, teacher, 3)["answer"] == GROUNDED
    assert len(teacher.by_seed) == 3  # the first of the three is the single answer, paid for once


def test_an_unfit_answer_is_never_kept_however_grounded(tmp_path: Path) -> None:
    echo = f"{QUESTION} £3.95"  # restates the question: rejected as an echo, though the chunk says £3.95
    assert answered(tmp_path, ScriptedTeacher([echo, FILLER]), 2)["answer"] == FILLER
