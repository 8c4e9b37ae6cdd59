"""The voice score: how much each model's replies to a creator's community sound like the creator.

The creator's own replies (synth.persona.replies_file) are split by post. A classifier learns the creator's replies to
the posts synth saw against the teacher's generic replies to the same comments; each model then replies to the
comments on the posts nobody trained on, and its score is the classifier's mean probability that those replies
are the creator's. The creator's own held-out replies and the teacher's generic ones bound the scale."""

from __future__ import annotations

import asyncio

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from alambic.hashing import stable_hash
from alambic.models import Sampling
from alambic.models.teacher import Teacher
from alambic.persona import CreatorReply, reply_messages, voice_examples
from alambic.prompts import Prompts
from alambic.results import VoiceResult
from alambic.store import Item

VOICE_KIND = "voice"


class VoiceClassifier:
    """Character n-grams (TF-IDF, within words) under a logistic regression: the creator's replies against generic
    ones. Character n-grams carry what a voice is made of (punctuation, emoji, endings, pet words) in any script."""

    def __init__(self, creator: list[str], generic: list[str]) -> None:
        self.pipeline = make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, lowercase=False),
            LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced"),
        )
        self.pipeline.fit(creator + generic, [1] * len(creator) + [0] * len(generic))

    def scores(self, texts: list[str]) -> list[float]:
        """P(the creator wrote it), for each text; an empty text scores 0."""
        probabilities = self.pipeline.predict_proba([text or " " for text in texts])[:, 1]
        return [float(p) if text.strip() else 0.0 for p, text in zip(probabilities, texts, strict=True)]

    def accuracy(self, creator: list[str], generic: list[str]) -> float:
        right = [p >= 0.5 for p in self.scores(creator)] + [p < 0.5 for p in self.scores(generic)]
        return sum(right) / len(right)


async def generic_replies(
    teacher: Teacher, prompts: Prompts, replies: list[CreatorReply], max_tokens: int
) -> list[str]:
    """The teacher's reply to each comment without the creator's voice (the ledger keeps what was paid for)."""
    semaphore = asyncio.Semaphore(max(1, teacher.parallel))

    async def one(reply: CreatorReply) -> str:
        messages = prompts.messages("generic-reply", post=reply.post, comment=reply.comment)
        async with semaphore:
            completion = await teacher.ask("evaluate", messages, Sampling(temperature=0.0, max_tokens=max_tokens))
        return completion.text.strip()

    return list(await asyncio.gather(*(one(reply) for reply in replies)))


def voice_items(replies: list[CreatorReply], creator: str, posts: list[str], prompts: Prompts) -> list[Item]:
    """The comments on held-out posts as items every model replies to: students and base as they were trained,
    the teacher with the creator's voice prompt and sample posts, as synth asked it."""
    items = []
    for reply in replies:
        if not reply.heldout:
            continue
        messages = reply_messages(creator, reply.post, reply.comment)
        teacher_messages = prompts.messages(
            "voice",
            creator=creator,
            post=reply.post,
            comment=reply.comment,
            samples=posts[:5],
            replies=voice_examples(replies),
        )
        payload = {
            "question": messages[1]["content"],
            "comment": reply.comment,
            "reply": reply.reply,
            "messages": messages,
            "teacher_messages": teacher_messages,
        }
        key = stable_hash(VOICE_KIND, messages, teacher_messages)[:24]
        items.append(Item(key, "", "evaluate", VOICE_KIND, "ok", payload))
    return items


def voice_result(
    replies: list[CreatorReply], generic: list[str], answers: dict[str, list[str]]
) -> tuple[VoiceResult, dict[str, float]]:
    """The classifier's held-out accuracy and the bounds of its scale, and each model's voice score."""
    trained = [(r.reply, g) for r, g in zip(replies, generic, strict=True) if not r.heldout]
    heldout = [(r.reply, g) for r, g in zip(replies, generic, strict=True) if r.heldout]
    classifier = VoiceClassifier([c for c, _ in trained], [g for _, g in trained])
    creator, teacher_generic = [c for c, _ in heldout], [g for _, g in heldout]
    result = VoiceResult(
        replies=len(heldout),
        trained_on=len(trained),
        accuracy=classifier.accuracy(creator, teacher_generic),
        creator=mean(classifier.scores(creator)),
        generic=mean(classifier.scores(teacher_generic)),
    )
    return result, {role: mean(classifier.scores(texts)) for role, texts in answers.items()}


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
