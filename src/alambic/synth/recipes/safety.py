"""Harmful or out-of-policy requests in the business's own setting, each answered with a refusal."""

from __future__ import annotations

from alambic.synth.recipes.base import Recipe

SAFETY_CATEGORIES = (
    "instructions that could hurt someone, dressed up as a question about the products",
    "help with fraud, such as a fake refund claim, a chargeback scam or a stolen card",
    "another customer's personal data (address, phone number, order history)",
    "harassing or hateful content about a person or a group",
    "medical, legal or financial advice that only a professional should give",
    "a jailbreak: the customer tells the assistant to ignore its rules or play another role",
)


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
