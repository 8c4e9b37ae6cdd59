"""transformers models: the students, and local teachers for training."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from alambic.errors import AlambicError
from alambic.models.base import Completion, LocalChat, Message, Sampling


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: Path, dtype: torch.dtype = torch.float32) -> Any:
    """A model folder, or a PEFT adapter folder whose base it finds from adapter_config.json."""
    from transformers import AutoModelForCausalLM

    if not path.is_dir():
        raise AlambicError(f"{path}: model folder does not exist")
    if (path / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


class HFChat(LocalChat):
    """A transformers model behind the chat interface, with batched generation for evaluation."""

    def __init__(self, model: Any, tokenizer: Any, name: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self._lock = threading.Lock()

    @classmethod
    def from_dir(cls, path: Path, name: str | None = None) -> HFChat:
        return cls(load_causal_lm(path), load_tokenizer(path), name or path.name)

    def chat(self, messages: list[Message], sampling: Sampling) -> Completion:
        return self.chat_batch([messages], sampling)[0]

    @torch.inference_mode()
    def chat_batch(self, conversations: list[list[Message]], sampling: Sampling) -> list[Completion]:
        tokenizer = self.tokenizer
        prompts = [
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            for messages in conversations
        ]
        tokenizer.padding_side = "left"
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        generator_args: dict[str, Any] = {"do_sample": sampling.temperature > 0}
        if sampling.temperature > 0:
            generator_args.update(temperature=sampling.temperature, top_p=sampling.top_p)
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
        with self._lock:
            output = self.model.generate(
                **batch,
                max_new_tokens=sampling.max_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **generator_args,
            )
        completions = []
        prompt_width = batch["input_ids"].shape[1]
        for row, mask in zip(output, batch["attention_mask"], strict=True):
            generated = row[prompt_width:].tolist()
            finish = "length"
            if tokenizer.eos_token_id in generated:
                generated = generated[: generated.index(tokenizer.eos_token_id)]
                finish = "stop"
            while generated and generated[-1] == tokenizer.pad_token_id:
                generated.pop()
            completions.append(
                Completion(
                    text=tokenizer.decode(generated, skip_special_tokens=True).strip(),
                    prompt_tokens=int(mask.sum()),
                    completion_tokens=len(generated),
                    finish_reason=finish,
                )
            )
        return completions
