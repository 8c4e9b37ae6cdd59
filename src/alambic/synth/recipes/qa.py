"""Question-and-answer recipes: grounded in the documents, from seed tasks, and evolved from earlier items."""

from __future__ import annotations

import asyncio

from alambic.synth.engine import Engine, KeyedChunk
from alambic.synth.recipes.base import Recipe
from alambic.text import normalise

QUESTION_KINDS = (
    "a factual question",
    "a how-to question",
    "a question comparing two options",
    "an edge case (an unusual situation)",
    "a question this passage does not answer, though a customer might still ask it here",
)
EVOLUTIONS = (
    "deepen: ask for more detail or a reason behind the same fact",
    "broaden: ask about a closely related need the passage also covers",
    "concretise: make it a specific case, with a concrete product, date, amount or place",
)


class GroundedQA(Recipe):
    """Questions of several kinds about each chunk, answered from the chunk, which the item cites."""

    name = "grounded-qa"
    kind = "qa"
    prompt_names = ("questions.system", "questions.user", "answer.system", "answer.user")

    def __init__(self, engine: Engine, chunks: list[KeyedChunk]) -> None:
        super().__init__(engine)
        self.chunks = chunks
        self.group_size = engine.settings.questions_per_chunk

    def max_groups(self) -> int:
        return len(self.chunks) * self.engine.settings.max_rounds

    async def run_group(self, index: int) -> int:
        chunk = self.chunks[index % len(self.chunks)]
        round_ = index // len(self.chunks)
        count = self.group_size
        kinds = [QUESTION_KINDS[(round_ + i) % len(QUESTION_KINDS)] for i in range(count)]
        questions_key = self.key("questions", chunk.key, count, round_)
        questions = await self.ask_lines(
            questions_key, "questions", "questions", [chunk.key], chunk=chunk.chunk.text, count=count, kinds=kinds
        )
        answers = [
            self.answer(self.key("answer", chunk.key, q), [index, i], "answer", q, chunk, [chunk.key, questions_key])
            for i, q in enumerate(questions)
        ]
        return sum(await asyncio.gather(*answers))


class SelfInstruct(Recipe):
    """New tasks in the spirit of a few seed tasks from the config, answered by the teacher."""

    name = "self-instruct"
    kind = "self-instruct"
    prompt_names = ("tasks.system", "tasks.user", "task-answer.system", "task-answer.user")
    examples_per_prompt = 3

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.group_size = engine.settings.questions_per_chunk

    def max_groups(self) -> int:
        return len(self.engine.settings.seed_tasks) * 4 * self.engine.settings.max_rounds

    async def run_group(self, index: int) -> int:
        seeds = self.engine.settings.seed_tasks
        shown = [seeds[(index + i) % len(seeds)] for i in range(min(self.examples_per_prompt, len(seeds)))]
        tasks_key = self.key("tasks", index, shown)
        tasks = await self.ask_lines(tasks_key, "tasks", "tasks", [], examples=shown, count=self.group_size)
        known = {normalise(seed) for seed in seeds}
        tasks = [task for task in tasks if normalise(task) not in known]
        answers = [
            self.answer(self.key("answer", task), [index, i], "task-answer", task, None, [tasks_key])
            for i, task in enumerate(tasks)
        ]
        return sum(await asyncio.gather(*answers))


class EvolInstruct(Recipe):
    """Earlier training questions made deeper, broader or more concrete, and answered from the same chunk."""

    name = "evol-instruct"
    kind = "evol-instruct"
    prompt_names = ("evolve.system", "evolve.user", "answer.system", "answer.user")

    def __init__(self, engine: Engine, sources: list[tuple[str, str, KeyedChunk | None]]) -> None:
        super().__init__(engine)
        self.sources = sources  # (item key, question, chunk it is grounded in)

    def max_groups(self) -> int:
        return len(self.sources) * min(len(EVOLUTIONS), self.engine.settings.max_rounds)

    async def run_group(self, index: int) -> int:
        source_key, question, chunk = self.sources[index % len(self.sources)]
        evolution = EVOLUTIONS[index // len(self.sources)]
        parents = [source_key] + ([chunk.key] if chunk else [])
        evolve_key = self.key("evolve", source_key, evolution)
        values = {"question": question, "evolution": evolution, "chunk": chunk.chunk.text if chunk else ""}
        evolved = await self.ask_text(evolve_key, "evolved", "evolve", parents, one_question=True, **values)
        if evolved is None or normalise(evolved) == normalise(question):
            return 0
        prompt = "answer" if chunk else "task-answer"
        extra = {"evolved_from": source_key, "evolution": evolution.split(":")[0]}
        key = self.key("answer", source_key, evolved)
        return await self.answer(key, [index, 0], prompt, evolved, chunk, [*parents, evolve_key], extra)
