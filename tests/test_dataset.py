"""The training set holds no more refusals than the safety recipe's share of the mix."""

from alambic.dataset import within_safety_share
from alambic.store import Item


def items(kind: str, count: int) -> list[Item]:
    return [Item(f"{kind}-{i}", "synth-x", "synth", kind, "ok", {"order": [count - i, 0]}) for i in range(count)]


def test_refusals_are_cut_to_the_safety_share_when_other_recipes_fall_short() -> None:
    mix = {"grounded-qa": 0.5, "persona-voice": 0.45, "safety": 0.05}
    short = [*items("qa", 35), *items("import", 28), *items("persona-voice", 1), *items("safety", 6)]
    kept = within_safety_share(short, mix)
    refusals = {item.key for item in kept if item.kind == "safety"}
    assert refusals == {"safety-5", "safety-4", "safety-3"}  # round(0.05 / 0.95 * 64): the first in recipe order
    assert len(kept) == len(short) - 3
    full = [*items("qa", 60), *items("persona-voice", 54), *items("safety", 6)]
    assert within_safety_share(full, mix) == full  # a mix that filled its targets keeps every refusal
    assert within_safety_share(short, {"grounded-qa": 1.0}) == [i for i in short if i.kind != "safety"]
    plain = items("qa", 3)
    assert within_safety_share(plain, mix) == plain
