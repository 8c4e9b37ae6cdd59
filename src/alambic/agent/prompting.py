"""What the agent's model reads for one customer turn: the business's system prompt, the conversation so far,
and the question with what its tools returned and the passages retrieval found (prompts/agent.user.j2,
overridable)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alambic.agent.retrieval import Passage
from alambic.models import Message
from alambic.prompts import Prompts

RETRIEVED = 4  # passages retrieved for each customer turn


def agent_messages(
    prompts: Prompts,
    system_prompt: str,
    question: str,
    passages: Sequence[Passage],
    history: Sequence[Message] = (),
    tool_results: Sequence[dict[str, Any]] = (),
) -> list[Message]:
    user_turn = prompts.render(
        "agent.user", question=question, passages=list(passages), tool_results=list(tool_results)
    )
    return [{"role": "system", "content": system_prompt}, *history, {"role": "user", "content": user_turn}]
