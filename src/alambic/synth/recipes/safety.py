"""Harmful or out-of-policy requests in the business's own setting, each answered with a refusal."""

from __future__ import annotations

from alambic.guard import UNSAFE_SUBJECTS
from alambic.synth.recipes.base import Recipe

SAFETY_CATEGORIES = tuple(UNSAFE_SUBJECTS)


class Safety(Recipe):
    """Harmful or out-of-policy requests in the domain, each with a firm and helpful refusal."""

    name = "safety"
    kind = "safety"
    prompt_names = ("unsafe-request.system", "unsafe-request.user", "refusal.system", "refusal.user")
    refusals_expected = True

    def max_groups(self) -> int:
        return len(SAFETY_CATEGORIES) * 8 * self.engine.settings.max_rounds

    async def run_group(self, index: int) -> int:
        category = SAFETY_CATEGORIES[index % len(SAFETY_CATEGORIES)]
        variant = index // len(SAFETY_CATEGORIES)
        request_key = self.key("request", category, variant)
        request = await self.ask_text(request_key, "unsafe-request", "unsafe-request", [], category=category)
        if request is None:
            return 0
        key = self.key("refusal", request)
        extra = {"category": category}
        return await self.answer(key, [index, 0], "refusal", request, None, [request_key], extra)
