"""distill against TRL (SFTTrainer, experimental GKDTrainer) on the same student, data and settings, and the size and
read speed of the teacher top-k store that `sparse` writes.

Each training side runs in its own child process: alambic through its CLI (`python -m alambic distill`), read back
from the ledger's run summary; TRL through bench/peers/trl_distill.py in .venv-peers. Every ratio is against a peer
measured in this run, except the DistillKit byte count, a fixed published value (its label says so).

What both sides share, per pair:
- the student: the `init` folder that alambic's run wrote (SmolLM2-135M-Instruct depth-pruned to 8 of 30 layers,
  evenly spaced, 57M parameters), loaded in fp32; the kd teacher: the embedded SmolLM2-135M-Instruct folder that
  alambic's run recorded as its teacher artifact;
- the data: the run's dataset artifact (train.jsonl: the synth run's training conversations, [system, user,
  assistant], single-turn, so "the last assistant turn" and "every assistant turn" are the same tokens), made by a
  synth run against the loopback mock teacher (word-salad answers of 4 lines), every example shorter than SEQ_LEN;
- STEPS optimizer steps of BATCH examples (no gradient accumulation), each example at most SEQ_LEN tokens;
  AdamW at LEARNING_RATE, no weight decay, cosine schedule, warm-up int(0.05 * STEPS) steps, clipping at 1.0
  (both torch.optim.AdamW with fused=True: alambic's on CPU and CUDA, TRL's default "adamw_torch_fused"); the same
  precision (bf16 autocast when alambic's summary says "bf16", else fp32); LoRA r16/alpha32/dropout 0 on all
  seven projections; loss on the assistant's answer only. Both draw the first epoch's order from torch.randperm
  seeded with 0, so they see the same examples in the same steps: the token counts must be equal (a note says
  when not), and the notes print both sides' per-step losses, whose first step should agree to ~1e-3;
- tokens/s: non-padding tokens trained on ÷ the wall time of the training loop alone, first step included on both
  sides (alambic's summary "tokens_per_second": its loop from before the first step to the end of the last; TRL:
  on_train_begin to the last on_step_end), excluding start-up, model loading, data preparation, the teacher top-k
  pass of `sparse` and the final save. alambic writes no checkpoint inside the timed loop (checkpoint_every is
  past the last step), TRL none at all;
- packing: alambic packs each step's examples into rows of SEQ_LEN (its default); TRL's SFT uses its padding-free
  batching (the step's examples flattened into one sequence, position ids restarting per example). GKDTrainer
  cannot pack: it pads each batch to its longest example, and the padding is not counted as tokens;
- kd: alambic `kd` with kd_ratio 1 (pure distillation loss, as GKD's), beta 0 (forward KL), temperature 1, the
  teacher reading the student's input (teacher_context = "student", as GKD's teacher does); GKD with lmbda 0 (no
  student samples), beta 0, temperature 1, seq_kd off. (TRL's GKD loss ignores its temperature; at 1 that is moot.)
- peak RSS: ru_maxrss of each side's child process (os.wait4), its whole life: alambic's includes building the
  pruned student from the 135M base; TRL's includes its dataset preparation.

The machine may be shared: pairs run back to back (alambic, then TRL) so that slow drift in the load hits both,
and each side's note (stderr) gives its CPU seconds and the load average, to tell a busy machine from a slow side.
On 2 idle cores the group takes about 4.5 minutes; the teacher top-k pass of `sparse` is the longest part.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import mock_teacher  # noqa: E402

from alambic.store import Ledger  # noqa: E402
from figures import figure  # noqa: E402

PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"  # `make peers` builds it
TRL_SCRIPT = REPO / "bench" / "peers" / "trl_distill.py"

EXAMPLES = 96  # training conversations (one per synth chunk)
ANSWER_TOKENS = 32  # the mock teacher's answers: 4 lines of word salad (~45 tokens; ~85 per conversation)
STEPS = 6  # optimizer steps per training run
BATCH = 8
SEQ_LEN = 384
LEARNING_RATE = 3e-4
WARMUP_FRACTION = 0.05
PRUNE_LAYERS = 8
LORA_R, LORA_ALPHA = 16, 32
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # alambic's
TOP_K = 64
DISTILLKIT_BYTES = 300.0  # DistillKit's compressed top-k logits, about 300 B/token at k=128 (its own figure)

ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def child(command: list[str], log: Path) -> dict[str, Any]:
    """Run a command to completion; its stdout's last line, its wall time and its own peak RSS (bytes)."""
    began = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(encoding="utf-8", errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed ({process.returncode}):\n{text[-4000:]}")
    last = text.strip().splitlines()[-1] if text.strip() else ""
    # CPU seconds and the load average are diagnostics: on a shared machine, other work slows either side.
    cpu = usage.ru_utime + usage.ru_stime
    wall = time.monotonic() - began
    return {"last": last, "wall": wall, "rss": usage.ru_maxrss * 1024, "cpu": cpu, "load": os.getloadavg()[0]}


def note(message: str) -> None:
    print(f"bench distill: {message}", file=sys.stderr, flush=True)


# data ---------------------------------------------------------------------------------------------------


def make_project(root: Path, base_url: str) -> Path:
    """A project whose synth run gives EXAMPLES single-turn training conversations (one per chunk)."""
    (root / "docs").mkdir(parents=True)
    sections = "\n\n".join(
        f"## Topic {i}\n\nFact number {i}: parcel {i} leaves on day {i % 7}." for i in range(EXAMPLES)
    )
    (root / "docs" / "facts.md").write_text(f"# Facts\n\n{sections}\n", encoding="utf-8")
    (root / "synth.toml").write_text(
        f'[teacher]\nbackend = "openai"\nbase_url = "{base_url}"\nmodel = "mock"\nconcurrency = 32\n\n'
        "[synth]\nquestions_per_chunk = 1\nmax_rounds = 1\nheldout_fraction = 0.0\n"
        f'recipes = {{ "grounded-qa" = 1.0 }}\nmax_answer_tokens = {ANSWER_TOKENS}\n',
        encoding="utf-8",
    )
    (root / "alambic.toml").write_text((root / "synth.toml").read_text(encoding="utf-8"), encoding="utf-8")
    return root


# alambic ------------------------------------------------------------------------------------------------


def alambic_distill(project: Path, work: Path, name: str, **settings: Any) -> dict[str, Any]:
    """`alambic distill` with these [distill] settings on top of the shared ones; its run summary, plus the child's
    peak RSS and the paths the TRL side needs (the dataset's train.jsonl, the teacher's folder)."""
    steps_per_epoch = math.ceil(EXAMPLES / BATCH)
    shared = {
        "prune_layers": PRUNE_LAYERS,
        "prune_strategy": "even",
        "epochs": (STEPS - 0.5) / steps_per_epoch,  # total steps = ceil(epochs * steps_per_epoch) = STEPS
        "batch_size": BATCH,
        "grad_accumulation": 1,
        "max_seq_len": SEQ_LEN,
        "learning_rate": LEARNING_RATE,
        "warmup_fraction": WARMUP_FRACTION,
        "lora_r": LORA_R,
        "lora_alpha": LORA_ALPHA,
        "packing": True,
        "precision": "auto",
        "checkpoint_every": 10_000,  # no checkpoint inside the timed loop (the one after the last step is outside)
        "seed": 0,
    }
    distill = "\n".join(f"{key} = {json.dumps(value)}" for key, value in {**shared, **settings}.items())
    base = (project / "synth.toml").read_text(encoding="utf-8")
    (project / "alambic.toml").write_text(f"{base}\n[distill]\n{distill}\n", encoding="utf-8")
    command = [sys.executable, "-m", "alambic", "distill", "--project", str(project)]
    ran = child(command, work / f"alambic-{name}.log")
    with Ledger(project / ".alambic" / "ledger.sqlite") as ledger:
        run = ledger.latest_done("distill")
        summary = dict(run.summary)
        summary["train_jsonl"] = ledger.artifact(summary["dataset"]).path
        teachers = [ledger.artifact(a) for a in summary.get("teacher_artifacts", [])]
        summary["teacher_paths"] = [t.path for t in teachers if t is not None and t.kind == "teacher"]
        if "logits_store" in summary:
            summary["logits_path"] = ledger.artifact(summary["logits_store"]).path
    if summary["steps"] != STEPS or summary["examples"] != EXAMPLES:
        raise RuntimeError(f"alambic {name}: {summary['steps']} steps over {summary['examples']} examples")
    note(
        f"alambic {name}: {summary['steps']} steps, {summary['train_tokens']} tokens at "
        f"{summary['tokens_per_second']} tok/s (bf16 {summary['bf16']}), losses "
        f"{[round(loss, 4) for _, loss in summary['losses']]}; process {ran['wall']:.0f}s ({ran['cpu']:.0f} CPU s, "
        f"load {ran['load']:.1f}), "
        f"peak RSS {ran['rss'] / 2**20:.0f} MiB"
    )
    return summary | {"rss": ran["rss"], "wall": ran["wall"]}


# TRL ----------------------------------------------------------------------------------------------------


def trl(work: Path, name: str, ours: dict[str, Any], mode: str, lora: bool, teacher: str | None = None) -> dict:
    """The TRL run matching alambic's run `ours`: same init folder, dataset, steps and settings."""
    settings = {
        "mode": mode,
        "student": ours["init_dir"],
        "teacher": teacher,
        "train": ours["train_jsonl"],
        "steps": STEPS,
        "batch_size": BATCH,
        "grad_accumulation": 1,
        "learning_rate": LEARNING_RATE,
        "warmup_fraction": WARMUP_FRACTION,
        "max_seq_len": SEQ_LEN,
        "bf16": ours["bf16"],
        "lora": {"r": LORA_R, "alpha": LORA_ALPHA, "targets": LORA_TARGETS} if lora else None,
        "temperature": 1.0,
        "beta": 0.0,
    }
    path = work / f"trl-{name}.json"
    path.write_text(json.dumps(settings), encoding="utf-8")
    ran = child([str(PEERS_PYTHON), str(TRL_SCRIPT), str(path)], work / f"trl-{name}.log")
    result = json.loads(ran["last"])
    # The same examples in the same steps: both draw torch.randperm(EXAMPLES) seeded with 0 for the first epoch.
    if result["tokens"] != ours["train_tokens"]:
        note(f"{name}: TRL trained on {result['tokens']} tokens, alambic on {ours['train_tokens']}")
    rate = result["tokens"] / result["seconds"]
    note(
        f"TRL {name}: {result['steps']} steps, {result['tokens']} tokens at {rate:.1f} tok/s (steps ended at "
        f"{result['step_ends']}s), losses {result['losses']}; process {ran['wall']:.0f}s ({ran['cpu']:.0f} CPU s, "
        f"load {ran['load']:.1f}), "
        f"peak RSS {ran['rss'] / 2**20:.0f} MiB"
    )
    return result | {"rss": ran["rss"], "tokens_per_second": rate}


def precision(ours: dict[str, Any]) -> str:
    return "bf16 autocast" if ours["bf16"] else "fp32"


def training(project: Path, work: Path) -> list[dict]:
    figures = []
    for adapter in ("lora", "full"):
        ours = alambic_distill(project, work, f"sft-{adapter}", method="sft", adapter=adapter)
        theirs = trl(work, f"sft-{adapter}", ours, "sft", lora=adapter == "lora")
        peer = (
            f"TRL 1.16 SFTTrainer, {'LoRA r16' if adapter == 'lora' else 'full'}, padding-free "
            f"({theirs['tokens']} tokens, {STEPS} steps x {BATCH}, {precision(ours)})"
        )
        figures.append(
            figure(
                f"distill-sft-{adapter}-tokens-vs-trl",
                ours["tokens_per_second"],
                "tokens/s",
                peer,
                theirs["tokens_per_second"],
                ">=1.3",
            )
        )
    ours = alambic_distill(
        project,
        work,
        "kd",
        method="kd",
        adapter="full",
        teacher_model="embedded",
        teacher_context="student",
        kd_ratio=1.0,
        beta=0.0,
        temperature=1.0,
    )
    theirs = trl(work, "kd", ours, "gkd", lora=False, teacher=ours["teacher_paths"][0])
    peer = (
        f"TRL 1.16 GKDTrainer, lmbda 0, beta 0, full, padded ({theirs['tokens']} tokens, {STEPS} steps x {BATCH}, "
        f"{precision(ours)})"
    )
    figures.append(
        figure(
            "distill-kd-tokens-vs-trl",
            ours["tokens_per_second"],
            "tokens/s",
            peer,
            theirs["tokens_per_second"],
            ">=1.3",
        )
    )
    figures.append(
        figure("distill-kd-rss-vs-trl", ours["rss"] / 2**20, "MiB peak RSS", peer, theirs["rss"] / 2**20, "<=0.7")
    )
    return figures


# the teacher top-k store --------------------------------------------------------------------------------


def conversation_tokens(model_dir: Path, train_jsonl: Path) -> int:
    """The tokens of every conversation of the dataset, through the student's chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(line) for line in train_jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sum(len(tokenizer.apply_chat_template(row["messages"], tokenize=True)["input_ids"]) for row in rows)


def logits_store(project: Path, work: Path) -> list[dict]:
    """`alambic distill` with method sparse (local teacher, top-64) writes the store; then it is read back."""
    from alambic.distill.logits_store import LogitsStore

    ours = alambic_distill(
        project,
        work,
        "sparse",
        method="sparse",
        adapter="full",
        logits_source="local",
        top_k=TOP_K,
        teacher_model="embedded",
        teacher_context="student",
    )
    store = LogitsStore(ours["logits_path"])
    if store.k != TOP_K or len(store) != EXAMPLES:
        raise RuntimeError(f"{ours['logits_path']}: k={store.k}, {len(store)} examples")
    per_token = store.bytes_per_token()
    # Load time per epoch: open the store and decode every example's top-k rows (ids and log-probs), as one epoch
    # of `sparse` training reads them (the page cache is warm: the store was just written). Best of three.
    loads = []
    for _ in range(3):
        began = time.perf_counter()
        reread = LogitsStore(ours["logits_path"])
        tokens = sum(len(reread.get(key).ids) for key in reread.keys)
        loads.append(time.perf_counter() - began)
    # One epoch of the same `sparse` training, from its measured speed: every example's tokens once (as the chat
    # template tokenises them), at the tokens/s of the run's STEPS steps.
    epoch_tokens = conversation_tokens(Path(ours["init_dir"]), Path(ours["train_jsonl"]))
    epoch_seconds = epoch_tokens / ours["tokens_per_second"]
    return [
        figure(
            "distill-logits-bytes-vs-distillkit",
            per_token,
            f"bytes/token (k={TOP_K}, {tokens} answer tokens)",
            "DistillKit ~300 B/token at k=128 (published figure, not measured here)",
            DISTILLKIT_BYTES,
            "<=0.5 (fewer bytes per top-k entry)",
        ),
        figure(
            "distill-logits-load-vs-epoch",
            min(loads),
            "s to read every example back",
            f"one sparse training epoch ({EXAMPLES} examples, {epoch_tokens} tokens at "
            f"{ours['tokens_per_second']:.0f} tok/s over {STEPS} steps)",
            epoch_seconds,
            "<=0.05",
        ),
    ]


def run() -> list[dict]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not PEERS_PYTHON.exists():
        raise RuntimeError(f"{PEERS_PYTHON} missing: run `make peers`")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with mock_teacher(latency=0.0, tokens=ANSWER_TOKENS) as url:
            project = make_project(work / "project", url)
            child([sys.executable, "-m", "alambic", "synth", "--project", str(project)], work / "synth.log")
        return training(project, work) + logits_store(project, work)
