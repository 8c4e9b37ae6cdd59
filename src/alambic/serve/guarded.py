"""The guard in front of and behind every chat completion the server gives: an unsafe request or answer is
replaced by the business's refusal message, and each decision is counted in the ledger by category (the text
only if the business opted in with safety.log_requests)."""

from __future__ import annotations

import uuid
from typing import Any

from alambic.guard import Exchange, Guard, Verdict
from alambic.guard.remote import GuardError
from alambic.store import Item, Ledger


def message_text(content: Any) -> str:
    """A message's text, whether a string or OpenAI's list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


class ServedGuard:
    def __init__(self, guard: Guard, refusal: str, ledger: Ledger, check_answers: bool, log_text: bool) -> None:
        self.guard, self.refusal, self.ledger = guard, refusal, ledger
        self.check_answers, self.log_text = check_answers, log_text

    async def check(self, request: str, answer: str | None = None) -> Verdict:
        """The verdict on a request, or on an answer to it; without a verdict (the guard failed), unsafe."""
        exchange = Exchange(request, answer)
        direction = "request" if answer is None else "answer"
        try:
            verdict = (await self.guard.check([exchange]))[0]
        except GuardError as exc:
            verdict = Verdict(True, 1.0, "guard-error")
            self._record(direction, verdict, exchange, str(exc))
            return verdict
        self._record(direction, verdict, exchange)
        return verdict

    def _record(self, direction: str, verdict: Verdict, exchange: Exchange, error: str | None = None) -> None:
        payload: dict[str, Any] = {
            "direction": direction,
            "unsafe": verdict.unsafe,
            "category": verdict.category if verdict.unsafe else None,
            "score": round(verdict.score, 4),
        }
        if error:
            payload["error"] = error
        if self.log_text:
            payload["request"] = exchange.request
            if exchange.answer is not None:
                payload["answer"] = exchange.answer
        key = f"guard-{uuid.uuid4().hex}"
        self.ledger.put_item(Item(key, "serve", "serve", "guard-decision", "ok", payload))
