"""Which tool a customer's message calls for, if any: a logistic regression over the bundled MiniLM's sentence
vectors and hashed character n-grams of the folded text (MiniLM reads English only; the n-grams carry Arabic and
other scripts), trained at release on each tool's example requests against the business's ordinary questions. A
small student picks tools unreliably; this costs one MiniLM pass (a few ms) and is measured on held-out requests.

Whether the customer asks for a person is a fixed phrase list in several languages (data/person-requests.txt),
matched as whole folded words."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from alambic.errors import AlambicError
from alambic.models.embeddings import Embedder
from alambic.text import contains, words

NO_TOOL = "none"
ROUTER_FORMAT = 2
NGRAM_FEATURES = 2**12


def features(texts: list[str], embedder: Embedder) -> np.ndarray:
    from sklearn.feature_extraction.text import HashingVectorizer

    grams = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=NGRAM_FEATURES, norm="l2")
    folded_texts = [" ".join(words(text)) for text in texts]
    return np.hstack([embedder.embed(texts).numpy(), grams.transform(folded_texts).toarray()])


def person_phrases() -> list[str]:
    text = resources.files("alambic.agent").joinpath("data/person-requests.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def asks_for_person(text: str, phrases: list[str]) -> bool:
    return any(contains(text, phrase) for phrase in phrases)


class RouterModel(BaseModel):
    format: int = ROUTER_FORMAT
    classes: list[str]
    weights: list[list[float]]
    bias: list[float]
    examples: dict[str, int]  # training requests per class


class ToolRouter:
    def __init__(self, model: RouterModel, embedder: Embedder) -> None:
        self.model, self.embedder = model, embedder
        self.weights, self.bias = np.asarray(model.weights), np.asarray(model.bias)

    @classmethod
    def train(cls, requests: dict[str, list[str]], ordinary: list[str], embedder: Embedder) -> ToolRouter:
        """`requests`: each tool's example requests; `ordinary`: questions that call for no tool."""
        from sklearn.linear_model import LogisticRegression

        labelled = [(text, name) for name, texts in requests.items() for text in texts if text.strip()]
        labelled += [(text, NO_TOOL) for text in ordinary if text.strip()]
        classes = sorted({name for _, name in labelled})
        if len(classes) < 2:
            return cls(RouterModel(classes=classes or [NO_TOOL], weights=[], bias=[], examples={}), embedder)
        vectors = features([text for text, _ in labelled], embedder)
        labels = [name for _, name in labelled]
        fitted = LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000).fit(vectors, labels)
        weights, bias = fitted.coef_, fitted.intercept_
        if len(fitted.classes_) == 2:  # scikit-learn keeps one row for two classes: make it one per class
            weights, bias = np.vstack([-weights[0], weights[0]]) / 2, np.array([-bias[0], bias[0]]) / 2
        counts = {name: labels.count(name) for name in classes}
        model = RouterModel(
            classes=list(fitted.classes_), weights=weights.tolist(), bias=bias.tolist(), examples=counts
        )
        return cls(model, embedder)

    @classmethod
    def load(cls, path: Path, embedder: Embedder) -> ToolRouter:
        try:
            model = RouterModel.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise AlambicError(f"{path}: the agent's tool router is missing or damaged ({exc})") from exc
        if model.format != ROUTER_FORMAT:
            raise AlambicError(f"{path}: a tool router of format {model.format}; run `alambic release` again")
        return cls(model, embedder)

    def save(self, path: Path) -> None:
        path.write_text(self.model.model_dump_json(indent=1), encoding="utf-8")

    def choose(self, text: str, allowed: set[str]) -> str:
        """The most likely class among the tools in `allowed` and none."""
        if not self.model.weights:
            return NO_TOOL
        scores = self.weights @ features([text], self.embedder)[0] + self.bias
        ranked = sorted(zip(scores, self.model.classes, strict=True), reverse=True)
        return next((name for _, name in ranked if name == NO_TOOL or name in allowed), NO_TOOL)
