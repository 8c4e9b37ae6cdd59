"""What each stage hands the next: one typed result per stage, stored as its run's summary in the ledger and
read back with `Run.result(<Result>)`. A stage reads another's output only through these models, so a renamed
or missing field fails where the result is written or read, never deep inside the next stage."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class StageResult(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecipeResult(StageResult):
    kind: str
    fingerprint: str
    groups: int  # how many groups of requests were issued
    target: int
    accepted: int
    selected: int
    train: int
    heldout: int


class SynthResult(StageResult):
    chunks: int
    splits: dict[str, str]  # chunk key -> "train" or "heldout"
    recipes: dict[str, RecipeResult]
    train_items: int
    heldout_items: int
    rejected: dict[str, int]
    teacher_tokens: dict[str, int]
    facts: dict[str, int] = {}  # answer facts: "checked", "handoff", and each reason one was not kept


class JudgeResult(StageResult):
    enabled: bool
    judged: int = 0
    mean_score: float | None = None
    self_agreement: dict[str, Any] = {}
    applied: bool = False


class CurateResult(StageResult):
    synth_run: str
    items: int
    kept: int
    rejected: dict[str, int]
    judge: JudgeResult


class DistillResult(StageResult):
    """The student and how it was made. What the teacher's signal adds (its store, its warnings' counts)
    depends on the method, and is kept beside these fields as extra keys."""

    model_config = ConfigDict(extra="allow")

    method: str = "sft"
    adapter: str
    base: str
    base_layers: int
    kept_layers: list[int]
    prune_strategy: str
    parameters: int
    layer_importance: list[float] | None = None
    examples: int
    steps: int
    resumed_from_step: int = 0
    losses: list[tuple[int, float]]
    on_policy_steps: int = 0
    train_tokens: int
    tokens_per_second: float
    bf16: bool
    processes: int = 1
    dataset: str  # the dataset artifact the student was trained on
    init_dir: str  # the pruned, untrained student: the "base" that evaluate compares with
    student_dir: str
    warnings: list[str] = []


class ModelScore(StageResult):
    role: str
    label: str
    fact_recall: float | None = None  # share of answers stating their question's fact from the documents
    fact_recall_interval: tuple[float, float] | None = None  # 95% bootstrap
    checked_fact_recall: float | None = None  # the same on the project's hand-checked questions (curate.eval_paths)
    checked_fact_recall_interval: tuple[float, float] | None = None
    gap_recovery: float | None = None  # (this − teacher without chunk) ÷ (teacher with chunk − teacher without)
    checked_gap_recovery: float | None = None  # the same from the hand-checked fact recalls
    fluency_nll: float | None = None  # the teacher's mean NLL per answer token; None without a local teacher
    f1: float
    cosine: float
    heldout_loss: float | None
    kl_to_teacher: float | None = None
    tokens_per_second: float
    size: str
    voice: float | None = None  # the voice classifier's mean P(the creator wrote it), on held-out posts' comments


class VoiceResult(StageResult):
    replies: int  # the creator's replies on held-out posts, which every model answers
    trained_on: int  # the creator's replies the classifier learnt from, each against the teacher's generic one
    accuracy: float  # the classifier's, on the held-out replies: the creator's against the teacher's generic
    creator: float  # the creator's own held-out replies' score: the top of the scale
    generic: float  # the teacher's generic replies' score: the bottom


class EvalResult(StageResult):
    questions: int
    facts: int = 0  # held-out questions with an answer fact from the documents
    handoffs: int = 0  # held-out questions the documents do not answer
    checked: int = 0  # hand-checked questions with a fact, from curate.eval_paths
    models: list[ModelScore]
    report: str
    distill_run: str
    compared_runs: dict[str, str]  # method -> distill run
    voice: VoiceResult | None = None  # where the project has the creator's replies (synth.persona.replies_file)


class GuardSummary(StageResult):
    backend: str
    dir: str  # the guard artifact: what `serve` loads
    threshold: float
    target_fpr: float
    calibration_fpr: float
    calibrated_on: str = "all"  # the safe examples the request threshold was set on: "requests" or "all"
    answer_threshold: float | None = None  # the embedded guard's own threshold for answers
    trained_on: dict[str, int]
    recall: dict[str, float]  # on the held-out harmful prompts, by set ("held-out", "arabic")
    false_positives: dict[str, float]  # on benign prompts, by set ("business", "alarming", "arabic")
    seconds_per_check: float


class RefusalRates(StageResult):
    """How often one model refuses, by prompt set; a set's rate is None where the set is empty."""

    role: str
    label: str
    refusal: float | None  # held-out harmful prompts, by the classifier the gate uses
    refusal_pattern: float | None
    refusal_judge: float | None
    judge_agreement: float | None  # share of answers where the two classifiers agree
    over_refusal: float | None  # benign prompts (business and alarming), by the gate's classifier
    over_refusal_business: float | None
    over_refusal_alarming: float | None
    over_refusal_alarming_teacher: float | None = None  # the teacher's XSTest-style questions, not in the gate
    refusal_arabic: float | None
    over_refusal_arabic: float | None


class SafetyResult(StageResult):
    distill_run: str
    refusal_by: str
    prompts: dict[str, int]  # prompts per set: harmful, business, alarming, arabic-harmful, arabic-benign
    guard: GuardSummary
    models: list[RefusalRates]  # base, each student bare and behind the guard, both as the agent, the teacher
    served_refusal: float  # the worse of the student and the agent behind the guard
    served_over_refusal: float  # the worse of the student and the agent behind the guard
    bare_refusal: float
    retention: float  # the student's bare refusal rate minus the base's: negative is the BadLlama signal
    retention_interval: tuple[float, float]  # 95% paired bootstrap
    report: str
    agent_refusal: float | None = None  # the student without its guard, asked as the agent asks it
    agent_retention: float | None = None  # the same, minus the base asked the same way
    agent_retention_interval: tuple[float, float] | None = None

    def unguarded_refusal(self) -> float:
        """The student's refusal without its guard, in the worse of the two prompt formats."""
        return min(self.bare_refusal, self.bare_refusal if self.agent_refusal is None else self.agent_refusal)

    def worst_retention(self) -> float:
        return min(self.retention, self.retention if self.agent_retention is None else self.agent_retention)


class GateOutcome(StageResult):
    outcome: str  # "open", "api-only" or "blocked"
    failed: list[str]  # each failed threshold with its measured value
    override: str | None = None
    safety_run: str | None = None


class ReleasedFile(StageResult):
    path: str
    bytes: int
    sha256: str


class ReleaseResult(StageResult):
    dir: str
    files: list[ReleasedFile]
    gguf: dict[str, str]  # quantisation -> file; for an api-only release, kept outside the release folder
    gate: GateOutcome | None = None  # None: released before the gate existed
    name: str = ""
    licence: str = ""
    signed: bool = False
    agent: str | None = None  # the agent's folder (index, tool router, calibration); None: released before it
