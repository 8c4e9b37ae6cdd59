"""Harmful or out-of-policy requests, each answered with a refusal: requests the teacher writes in the
business's own setting, alternating with the generic harmful requests alambic ships (HarmBench's behaviours and
its own hazard examples, never their held-out fifth, which measures the student). A teacher answer that does not
refuse is replaced by the business's refusal message, so even a teacher that will not refuse teaches refusals."""

from __future__ import annotations

from alambic.guard import UNSAFE_SUBJECTS
from alambic.guard.embedded import harmbench_behaviours, hazard_requests
from alambic.guard.loading import held_out
from alambic.synth.engine import Engine
from alambic.synth.recipes.base import Recipe

SAFETY_CATEGORIES = tuple(UNSAFE_SUBJECTS)


def generic_requests() -> list[str]:
    """The packaged harmful requests that may be trained on, in a fixed order."""
    texts = [*harmbench_behaviours(), *(example.text for example in hazard_requests())]
    return sorted((text for text in texts if not held_out(text)), key=lambda text: (len(text) % 7, text))


class Safety(Recipe):
    """Harmful or out-of-policy requests, in the domain and generic, each with a firm and helpful refusal."""

    name = "safety"
    kind = "safety"
    prompt_names = ("unsafe-request.system", "unsafe-request.user", "refusal.system", "refusal.user")
    refusals_expected = True

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.generic = generic_requests()
        self.refusal = engine.config.safety.resolved_refusal_message(engine.business)

    def max_groups(self) -> int:
        return 2 * len(SAFETY_CATEGORIES) * 8 * self.engine.settings.max_rounds

    async def run_group(self, index: int) -> int:
        if index % 2:
            request = self.generic[(index // 2) % len(self.generic)]
            parents: list[str] = []
            extra = {"category": "generic"}
        else:
            category = SAFETY_CATEGORIES[(index // 2) % len(SAFETY_CATEGORIES)]
            variant = index // (2 * len(SAFETY_CATEGORIES))
            request_key = self.key("request", category, variant)
            text = await self.ask_text(request_key, "unsafe-request", "unsafe-request", [], category=category)
            if text is None:
                return 0
            request, parents, extra = text, [request_key], {"category": category}
        key = self.key("refusal", request, self.refusal)
        return await self.answer(key, [index, 0], "refusal", request, None, parents, extra)
