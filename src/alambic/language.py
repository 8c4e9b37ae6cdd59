"""The language of a text (ISO 639-1), and whether an answer is in the language of its question.

Backed by py3langid (BSD-3-Clause, its 139-language model inside a 4.6 MB wheel, so no network at run time): on
the support-desk docs and 70 short questions in en/ar/fr/es/de it was right on 235 of 252 texts, and on all 212
it was at least 0.4 sure of, loading in 1.5 s with ~100 MB and 0.2 ms a call, where lingua (all languages) took
~20 s and ~1 GB and misread Arabic that names English products, and fastText's lid.176 model is CC BY-SA 3.0.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

# Below this the language is "undetermined". Over 281 measured texts the surest wrong guess scored 0.28 (list
# fragments such as "Free over £80." -> nl); at 0.4 no accepted guess was wrong and 66 of the 70 short questions
# were still decided (the four left out, e.g. "Refund please" and "¿Envían a España?", are then not judged).
MIN_CONFIDENCE = 0.4

# Varieties the model tells apart but that share one ISO 639-1 code; their probabilities are added up, so
# Egyptian or Moroccan Arabic counts as Arabic. Other labels without an ISO 639-1 code come back as the model's
# ISO 639-3 code ("kab", "pcm", ...).
_ISO_639_1 = {
    "arz": "ar",
    "ary": "ar",
    "yue": "zh",
    "wuu": "zh",
    "uzs": "uz",
    "sdh": "ku",
    "gug": "gn",
    "fuv": "ff",
    "kik": "ki",
}
# A text whose language is undetermined is still ruled out of a language it gives less than this. Over the 281
# measured texts the true language never got below 0.0136 ("Merci"), and text without words (codes, "250 g") gets
# about 1/140 = 0.007 for every language; but all 48 Arabic texts gave each of en/fr/es/de less than 0.002, and 218
# of the 226 Latin-script ones gave Arabic less: "We open at nine." is only 0.34 English, yet 0.0006 Arabic. So a
# terse answer in another script than its question's is still told apart.
RULED_OUT = 0.002

_NO_LANGUAGE = "zxx"  # the model's label for text without linguistic content (numbers, codes)


@functools.cache
def _identifier() -> LanguageIdentifier:
    """The model, loaded once (about 1.5 s) on first use rather than at import."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def language_confidences(text: str) -> dict[str, float]:
    """Probability of each language (ISO 639-1 where one exists), summing to 1; empty if `text` has no letters."""
    if not any(ch.isalpha() for ch in text):
        return {}
    scores: dict[str, float] = {}
    for label, probability in _identifier().rank(" ".join(text.split())):
        code = _ISO_639_1.get(label, label)
        scores[code] = scores.get(code, 0.0) + probability
    return scores


def _decided(scores: dict[str, float]) -> str | None:
    code, confidence = max(scores.items(), key=lambda item: item[1])
    return None if code == _NO_LANGUAGE or confidence < MIN_CONFIDENCE else code


def language_of(text: str) -> str | None:
    """ISO 639-1 code of `text`'s language ("en", "ar", "fr", ...), or None if it has no letters or the
    model is less than MIN_CONFIDENCE sure (typically one or two words, or product names and prices alone)."""
    scores = language_confidences(text)
    return _decided(scores) if scores else None


def same_language(question: str, answer: str) -> bool | None:
    """Whether `answer` is in the language of `question`. None when that cannot be told: either text has no
    letters, or neither is determined, or one is and the other gives its language at least RULED_OUT."""
    asked_scores, answered_scores = language_confidences(question), language_confidences(answer)
    if not asked_scores or not answered_scores:
        return None
    asked, answered = _decided(asked_scores), _decided(answered_scores)
    if asked is not None and answered is not None:
        return asked == answered
    if asked is not None and answered_scores.get(asked, 0.0) < RULED_OUT:
        return False
    if answered is not None and asked_scores.get(answered, 0.0) < RULED_OUT:
        return False
    return None


@functools.cache
def _raw_identifier() -> LanguageIdentifier:
    """The same model without normalisation: its scores are log-likelihoods, comparable between texts."""
    from py3langid.langid import LanguageIdentifier

    model = _identifier()
    return LanguageIdentifier(
        model.nb_ptc, model.nb_pc, model.nb_classes, model.tk_nextmove, model.tk_output, tk_row=model.tk_row
    )


def log_likelihood(text: str, language: str) -> float:
    """How likely `text` is as `language` (ISO 639-1) under the model: higher is likelier. Only differences
    between texts of about the same length mean anything, e.g. a line against the same line reversed."""
    varieties = {language} | {label for label, code in _ISO_639_1.items() if code == language}
    return max(score for label, score in _raw_identifier().rank(" ".join(text.split())) if label in varieties)
