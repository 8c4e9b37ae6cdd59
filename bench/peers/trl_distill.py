"""The TRL side of bench_distill.py; runs in .venv-peers (trl 1.16, transformers 5.23, peft 0.21), not in alambic's.

Usage: trl_distill.py SETTINGS_JSON

SETTINGS_JSON holds {"mode": "sft" | "gkd", "student": dir, "teacher": dir | null, "train": train.jsonl,
"steps", "batch_size", "grad_accumulation", "learning_rate", "warmup_fraction", "max_seq_len", "bf16",
"lora": {"r", "alpha", "targets"} | null, "temperature", "beta"}: the settings alambic's run used, which the
caller read back from alambic's run summary and config.

- sft: SFTTrainer on the conversations as a conversational prompt-completion dataset (prompt = every turn but the
  last, completion = the last assistant turn), so its loss is on the assistant's answer only
  (completion_only_loss), as alambic's. Padding-free batching (`padding_free=True`): each step's examples are
  flattened into one sequence with position ids that restart per example, so no example sees another and no
  padding is processed. This keeps alambic's semantics of a batch (batch_size examples per step, packed);
  TRL's `packing=True` would instead pack the whole dataset into max_length rows and make the batch size count
  rows. TRL refuses padding_free without packing when max_length is set, so max_length is None: the caller
  checks that no example exceeds max_seq_len, so nothing would be cut on either side.
- gkd: trl.experimental.gkd.GKDTrainer with lmbda = 0 (never samples from the student), seq_kd off, the given
  beta (0: forward KL) and temperature. Its collator (DataCollatorForChatML) pads each batch to its longest
  example and labels the last assistant turn; it cannot pack (its loss reads the attention mask), so it
  processes padding, which is not counted as tokens.

Both: AdamW (TRL's default implementation), no weight decay, cosine schedule with int(warmup_fraction * steps)
warm-up steps, gradient clipping at 1.0, bf16 autocast on CPU when alambic used it (else fp32), no gradient
checkpointing (SFTConfig turns it on by default; alambic does not use it), no checkpoints, no evaluation.

Measured: the training loop alone, from `on_train_begin` (after the model, dataset, collator, optimizer and
scheduler are built) to the end of the last optimizer step, as alambic's run summary times its loop. Tokens:
the non-padding tokens of every micro-batch trained on (attention_mask sum, or the flattened sequence's length
when padding-free). Prints one JSON line: {"seconds", "tokens", "steps", "rss", "epoch_tokens", "longest",
"trainable", "step_ends", "losses"}.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback


class Clock(TrainerCallback):
    """Wall time of the training loop: first step's start to last step's end."""

    began = ended = 0.0
    steps = 0

    def __init__(self) -> None:
        self.step_ends: list[float] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.began = time.monotonic()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ended = time.monotonic()
        self.step_ends.append(self.ended - self.began)
        self.steps += 1


def counting(trainer_class: type) -> type:
    """The trainer, counting the non-padding tokens of each micro-batch it trains on."""

    class Counting(trainer_class):  # type: ignore[misc, valid-type]
        tokens_trained = 0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.losses: list[float] = []

        def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
            if "attention_mask" in inputs:
                self.tokens_trained += int(inputs["attention_mask"].sum())
            else:  # padding-free: one flattened row, nothing padded
                assert inputs["input_ids"].shape[0] == 1
                self.tokens_trained += int(inputs["input_ids"].shape[1])
            loss = super().training_step(model, inputs, num_items_in_batch)
            self.losses.append(round(float(loss), 4))  # a diagnostic: step 1 sees alambic's step 1 batch
            return loss

    return Counting


def common_args(settings: dict[str, Any], out: Path) -> dict[str, Any]:
    steps = settings["steps"]
    return {
        "output_dir": str(out),
        "max_steps": steps,
        "per_device_train_batch_size": settings["batch_size"] // settings["grad_accumulation"],
        "gradient_accumulation_steps": settings["grad_accumulation"],
        "learning_rate": settings["learning_rate"],
        "weight_decay": 0.0,
        "lr_scheduler_type": "cosine",
        "warmup_steps": int(settings["warmup_fraction"] * steps),
        "max_grad_norm": 1.0,
        "bf16": bool(settings["bf16"]),
        "use_cpu": True,
        "gradient_checkpointing": False,
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "seed": 0,
    }


def main(settings_json: str) -> None:
    settings = json.loads(Path(settings_json).read_text(encoding="utf-8"))
    out = Path(settings_json).with_suffix(".out")
    rows = [json.loads(line) for line in Path(settings["train"]).read_text(encoding="utf-8").splitlines() if line]
    tokenizer = AutoTokenizer.from_pretrained(settings["student"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(settings["student"], dtype=torch.float32)
    clock = Clock()
    # How many tokens one epoch of these conversations holds, as the chat template tokenises them (a check that
    # both sides train on the same tokens; the caller compares it with alambic's).
    lengths = [len(tokenizer.apply_chat_template(row["messages"], tokenize=True)["input_ids"]) for row in rows]
    if max(lengths) > settings["max_seq_len"]:
        sys.exit(f"an example has {max(lengths)} tokens, more than max_seq_len {settings['max_seq_len']}")

    if settings["mode"] == "sft":
        from trl import SFTConfig, SFTTrainer

        data = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
        peft_config = None
        if settings["lora"]:
            from peft import LoraConfig

            lora = settings["lora"]
            peft_config = LoraConfig(
                r=lora["r"],
                lora_alpha=lora["alpha"],
                lora_dropout=0.0,
                target_modules=lora["targets"],
                task_type="CAUSAL_LM",
            )
        config = SFTConfig(
            **common_args(settings, out),
            max_length=None,
            padding_free=True,
            packing=False,
            completion_only_loss=True,
            dataset_num_proc=None,
        )
        trainer = counting(SFTTrainer)(
            model=model,
            args=config,
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[clock],
        )
    else:
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        teacher = AutoModelForCausalLM.from_pretrained(settings["teacher"], dtype=torch.float32)
        data = Dataset.from_list([{"messages": r["messages"]} for r in rows])
        config = GKDConfig(
            **common_args(settings, out),
            max_length=settings["max_seq_len"],
            lmbda=0.0,
            beta=settings["beta"],
            temperature=settings["temperature"],
            seq_kd=False,
        )
        trainer = counting(GKDTrainer)(
            model=model,
            teacher_model=teacher,
            args=config,
            train_dataset=data,
            processing_class=tokenizer,
            callbacks=[clock],
        )
    trainer.train()
    seconds = clock.ended - clock.began
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {
        "seconds": seconds,
        "tokens": trainer.tokens_trained,
        "steps": clock.steps,
        "rss": rss,
        "epoch_tokens": sum(lengths),
        "longest": max(lengths),
        "trainable": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "step_ends": [round(t, 2) for t in clock.step_ends],  # seconds since on_train_begin, a diagnostic
        "losses": trainer.losses,
    }
    assert math.isfinite(seconds) and clock.steps == settings["steps"], result
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
