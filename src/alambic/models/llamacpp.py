"""Local GGUF models through llama-cpp-python."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np

from alambic.errors import AlambicError

if TYPE_CHECKING:
    from llama_cpp import Llama
from alambic.models.base import Completion, LocalChat, Message, Sampling

T = TypeVar("T")


@contextlib.contextmanager
def llama_log_captured() -> Iterator[list[str]]:
    """Record llama.cpp's log instead of printing it; the caller may show it if something fails.

    The log never reaches file descriptor 2 while llama-cpp-python loads a model (it points stderr at
    /dev/null), and its own callback files llama.cpp's errors under an older level numbering, as debug: so
    every level is recorded here, through llama.cpp's public log hook.
    """
    import llama_cpp

    chunks: list[str] = []
    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def record(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        chunks.append(text.decode("utf-8", "replace"))

    previous, user_data = llama_cpp.llama_log_callback(), ctypes.c_void_p()
    llama_cpp.llama_log_get(ctypes.byref(previous), ctypes.byref(user_data))
    llama_cpp.llama_log_set(record, user_data)
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(previous, user_data)
        lines.extend("".join(chunks).splitlines())


@contextlib.contextmanager
def stderr_fd_captured() -> Iterator[list[str]]:
    """Capture what native code writes to file descriptor 2 itself."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines.extend(capture.read().decode("utf-8", "replace").splitlines())


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Capture what llama.cpp prints to stderr, then what it logs; the caller may show it if something fails."""
    lines: list[str] = []
    printed: list[str] = []
    logged: list[str] = []
    try:
        with llama_log_captured() as logged, stderr_fd_captured() as printed:
            yield lines
    finally:
        lines.extend(printed + logged)


def llama_cpp_said(lines: list[str], count: int = 3) -> str:
    """The last lines llama.cpp wrote, as the end of a one-line error; empty if it wrote nothing."""
    said = [line.strip() for line in lines if line.strip()][-count:]
    return f" — llama.cpp said: {' | '.join(said)}" if said else ""


@contextlib.contextmanager
def llama_cpp_failures(what: str) -> Iterator[None]:
    """Keep llama.cpp quiet during a call; if the call fails, an AlambicError with what llama.cpp logged."""
    log: list[str] = []
    try:
        with llama_log_captured() as log:
            yield
    except (RuntimeError, ValueError) as exc:
        raise AlambicError(f"{what} ({exc}){llama_cpp_said(log)}") from exc


def load_llama(path: Path, n_ctx: int = 2048, logits_all: bool = False) -> Llama:
    if not path.is_file():
        raise AlambicError(f"{path}: GGUF file does not exist")
    from llama_cpp import Llama

    log: list[str] = []
    try:
        with native_stderr_captured() as log:
            return Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                logits_all=logits_all,
                n_threads=os.cpu_count() or 1,
                verbose=False,
            )
    except (RuntimeError, ValueError) as exc:
        raise AlambicError(f"{path}: llama.cpp cannot load this GGUF ({exc}){llama_cpp_said(log)}") from exc


def plain_floats(value: Any) -> Any:
    """llama-cpp-python's logprobs hold numpy floats, which JSON cannot store: the same values as floats."""
    if isinstance(value, dict):
        return {key: plain_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_floats(item) for item in value]
    return float(value) if isinstance(value, np.floating) else value


def _recording_confidence(confidences: list[float]) -> Any:
    """A logits processor that records each step's highest token log-prob and changes nothing: the greedy
    answer's own log-probs, without logits_all, which made a 64-token answer about 5 times slower here."""
    from llama_cpp import LogitsProcessorList

    def record(input_ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        confidences.append(-float(np.log(np.exp(logits - logits.max()).sum())))  # log-softmax at the maximum
        return logits

    return LogitsProcessorList([record])


# The thread a server's llama.cpp generations all run on, one at a time, so that the event loop stays free: llama.cpp's
# OpenMP keeps a team of threads per calling thread, and a second team spinning beside the first made each answer
# about 3.5 times slower here (0.42 s against 0.12 s for 48 tokens). Elsewhere calls run on the caller's thread.
LLAMA_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")


class LlamaCppChat(LocalChat):
    """A GGUF chat model in this process. With `own_thread` (a server) its generations run on LLAMA_THREAD and
    `achat` leaves the event loop free; otherwise on the caller's thread, like every other local model."""

    def __init__(
        self,
        path: Path,
        n_ctx: int = 2048,
        name: str | None = None,
        logits_all: bool = False,
        own_thread: bool = False,
    ) -> None:
        self.path = path
        self.name = name or path.stem
        self.own_thread = own_thread
        self._llama = load_llama(path, n_ctx, logits_all)

    def submit(self, work: Callable[[], T]) -> Future[T]:
        """Run `work`, which may call this model, on LLAMA_THREAD."""
        return LLAMA_THREAD.submit(work)

    def chat(self, messages: list[Message], sampling: Sampling) -> Completion:
        if self.own_thread:
            return self.submit(lambda: self._chat(messages, sampling)).result()
        return self._chat(messages, sampling)

    async def achat(self, messages: list[Message], sampling: Sampling) -> Completion:
        if self.own_thread:
            return await asyncio.wrap_future(self.submit(lambda: self._chat(messages, sampling)))
        return self._chat(messages, sampling)

    def _chat(self, messages: list[Message], sampling: Sampling) -> Completion:
        confidences: list[float] = []
        began = time.monotonic()
        with llama_cpp_failures(f"{self.name}: llama.cpp could not answer"):
            response: Any = self._llama.create_chat_completion(
                messages=cast(Any, messages),
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                seed=sampling.seed,
                stop=list(sampling.stop) or None,
                response_format=(
                    {"type": "json_object", "schema": sampling.json_schema} if sampling.json_schema else None
                ),
                logprobs=bool(sampling.top_logprobs) or None,
                top_logprobs=sampling.top_logprobs or None,
                logits_processor=_recording_confidence(confidences) if sampling.confidence else None,
            )
        seconds = time.monotonic() - began
        choice, usage = response["choices"][0], response["usage"]
        return Completion(
            text=choice["message"]["content"] or "",
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            finish_reason=choice["finish_reason"] or "stop",
            seconds=seconds,
            logprobs=plain_floats((choice.get("logprobs") or {}).get("content")) if sampling.top_logprobs else None,
            mean_logprob=sum(confidences) / len(confidences) if confidences else None,
        )

    def openai_chat(self, request: dict[str, Any], should_stop: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        """OpenAI chat completion chunks for an already validated request (messages and sampling fields), one
        per token; generation ends early once `should_stop()` is true (a client gone, a deadline passed). To be
        iterated on the llama.cpp thread (`submit`)."""
        with llama_cpp_failures(f"{self.name}: llama.cpp could not answer"):
            yield from cast(
                Iterator[dict[str, Any]],
                self._llama.create_chat_completion(
                    **request, model=self.name, stream=True, logits_processor=self._ending_when(should_stop)
                ),
            )

    def openai_completion(self, request: dict[str, Any], should_stop: Callable[[], bool]) -> dict[str, Any]:
        """The whole OpenAI chat completion, with llama.cpp's own token counts; otherwise as `openai_chat`."""
        with llama_cpp_failures(f"{self.name}: llama.cpp could not answer"):
            return cast(
                dict[str, Any],
                self._llama.create_chat_completion(
                    **request, model=self.name, logits_processor=self._ending_when(should_stop)
                ),
            )

    def _ending_when(self, should_stop: Callable[[], bool]) -> Any:
        """A logits processor that leaves the end token the only choice once `should_stop()`: the chat API takes
        no stopping criteria."""
        from llama_cpp import LogitsProcessorList

        end = self._llama.token_eos()

        def end_when_told(input_ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
            if should_stop():
                logits[:] = -np.inf
                logits[end] = 0.0
            return logits

        return LogitsProcessorList([end_when_told])

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def close(self) -> None:
        self._llama.close()
