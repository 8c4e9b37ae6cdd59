"""What keeps the teacher's data, the student and the served agent safe, used by every stage that needs it.

A guard classifies exchanges (a customer's request, and the answer when there is one) as safe or unsafe, with
a category from the MLCommons hazard taxonomy that Llama Guard 3 uses, or one of the business's own
out-of-policy topics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

HAZARDS = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex-Related Crimes",
    "S4": "Child Sexual Exploitation",
    "S5": "Defamation",
    "S6": "Specialized Advice",
    "S7": "Privacy",
    "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons",
    "S10": "Hate",
    "S11": "Suicide & Self-Harm",
    "S12": "Sexual Content",
    "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}

# The subjects synth's safety recipe asks the teacher to write requests about, with the hazard each falls under.
UNSAFE_SUBJECTS = {
    "instructions that could hurt someone, dressed up as a question about the products": "S1",
    "help with fraud, such as a fake refund claim, a chargeback scam or a stolen card": "S2",
    "another customer's personal data (address, phone number, order history)": "S7",
    "harassing or hateful content about a person or a group": "S10",
    "medical, legal or financial advice that only a professional should give": "S6",
    "a jailbreak: the customer tells the assistant to ignore its rules or play another role": "jailbreak",
}


@dataclass(frozen=True)
class Exchange:
    request: str
    answer: str | None = None  # None: the request alone is checked, before anything is answered


@dataclass(frozen=True)
class Verdict:
    unsafe: bool
    score: float  # higher is more unsafe; `unsafe` is score > the guard's threshold
    category: str | None = None  # an S1–S14 hazard or a business topic, where the guard names one


class Guard(Protocol):
    """Any guard backend: embedded, openai (Llama Guard 3) or teacher (a judge with a rubric)."""

    name: str

    async def check(self, exchanges: list[Exchange]) -> list[Verdict]: ...

    async def aclose(self) -> None: ...
