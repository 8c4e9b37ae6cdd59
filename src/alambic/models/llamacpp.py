"""Local GGUF models through llama-cpp-python."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from alambic.errors import AlambicError
from alambic.models.base import Completion, Message, Sampling


def load_llama(path: Path, n_ctx: int = 2048, logits_all: bool = False):  # -> llama_cpp.Llama
    if not path.is_file():
        raise AlambicError(f"{path}: GGUF file does not exist")
    from llama_cpp import Llama

    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            return Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=os.cpu_count() or 1,
                logits_all=logits_all,
                verbose=False,
            )
    except ValueError as exc:
        raise AlambicError(f"{path}: llama.cpp cannot load this GGUF ({exc})") from exc


class LlamaCppChat:
    """A GGUF chat model in this process. llama.cpp runs one request at a time per model."""

    parallel = 1

    def __init__(self, path: Path, n_ctx: int = 2048, name: str | None = None) -> None:
        self.path = path
        self.name = name or path.stem
        self._llama = load_llama(path, n_ctx)
        self._lock = threading.Lock()

    def chat(self, messages: list[Message], sampling: Sampling) -> Completion:
        with self._lock:
            response = self._llama.create_chat_completion(
                messages=list(messages),  # type: ignore[arg-type]
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                seed=sampling.seed,
                stop=list(sampling.stop) or None,
            )
        choice = response["choices"][0]  # type: ignore[index]
        usage = response["usage"]  # type: ignore[index]
        return Completion(
            text=choice["message"]["content"] or "",
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            finish_reason=choice["finish_reason"] or "stop",
        )

    def close(self) -> None:
        self._llama.close()
