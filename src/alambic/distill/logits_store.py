"""A teacher's top-k log-probs for every token of a dataset, written once and read back across epochs and runs.

A store is a folder::

    meta.json    format, version, k, vocabulary size, teacher, dataset hash, quantisation, counts
    data.bin     one compressed block per example, back to back (read through a memory map)
    index.npy    int64 [examples, 3]: byte offset, byte length and token count of each block
    keys.json    the example keys, in index order

Row t of an example is the teacher's distribution at position t, in the same alignment as the model's logits:
it predicts the token after position t. Each row holds k distinct token ids and their log-probs at temperature 1
over the full vocabulary.

Encoding of one example (``[T, k]`` ids and log-probs):

- The entries of each row are sorted by token id. The ids are stored as gaps (the first id itself, then the
  differences), in uint16 (uint32 when the vocabulary exceeds 65536 ids). They come back exactly.
- Each log-prob becomes a code of a companded scale (`LogprobQuantiser`). The scale is linear in the probability
  for large probabilities, where absolute error matters, and linear in the log-probability for small ones,
  where relative error matters. Most entries of a top-64 are small: the 255 log-scale codes from p0 = 0.02 down
  to about e^-16.7 take one byte each. The rest take an escape byte (255) and then the uint16 code in a side
  stream: the few tokens above p0 and the very deep tail.
- The gap bytes (grouped by byte position: all low bytes, then all high bytes), the code bytes and the escapes
  are compressed together with zlib. Gaps are small among the frequent low-numbered tokens, and the code bytes
  are skewed, so zlib gets close to their order-0 entropy.

On real teacher output (SmolLM2-135M, top-64 of 49152) this takes 131-136 bytes per token on disk; longer
examples compress a little better. The ids take about 70 of them, the log-probs about 60. Uniformly random ids
would cost about 92 bytes alone (168 bytes per token in all). Decoding is one zlib call plus a few numpy
operations per example: about 5 µs per token.

Crash safety: the writer works in ``<path>.partial``. It appends the blocks to ``data.bin`` and one line per
example to ``journal.jsonl``, after the block. `LogitsStoreWriter.close` writes the index and the metadata, then
renames the folder into place, so a store at ``<path>`` is always complete. A writer opened again on the same
path resumes: it keeps the journaled examples and drops a torn tail.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from alambic.errors import AlambicError

FORMAT = "alambic-topk-logprobs"
VERSION = 1
PARTIAL_SUFFIX = ".partial"
META, DATA, INDEX, KEYS, JOURNAL = "meta.json", "data.bin", "index.npy", "keys.json", "journal.jsonl"
LOCK = "lock"  # held (flock) by the one writer of a partial store
QUANTISER_SCHEME = "linear-p-then-log-p/uint16"
ESCAPE = 255  # a code byte that means "the uint16 code follows in the escape stream"


class IncompleteStoreError(AlambicError):
    """The store was never closed (the writer crashed or is still running), or its files are truncated."""


class TopK(NamedTuple):
    ids: Tensor  # int64 [..., k], sorted ascending within each row
    logprobs: Tensor  # float32 [..., k], matching ids


@dataclass(frozen=True)
class LogprobQuantiser:
    """Log-probs to uint16 codes: absolute error ≤ ``max_prob_error`` in probability, everywhere.

    The error in log-probability is ≤ δ = ``max_log_error`` for every probability below p0 = ε / δ (ε =
    ``max_prob_error``; p0 = 0.02 by default). Above p0 it is ≤ ε / (p − ε), at most δ / (1 − δ).

    Codes 0..a are the probabilities 1 − 2εc, down to p0: a linear scale in p. The codes after that step down by
    2δ in log-probability, to ``min_logprob``: a linear scale in log p. Values below ``min_logprob`` (and -inf)
    are stored as ``min_logprob``.

    Why the defaults are within noise for KD. The gradient of forward KL in the student's logits is q − p, so an
    error in p moves the gradient by exactly that: at most 5e-4 per token here. The tail tokens matter through
    log p, for reverse KL. Their 0.025 nats of error are below what rounding the teacher's logits to bf16 does:
    up to 0.031 nats for logits of magnitude 8-16, and 0.0625 for 16-32. The tests measure the KD gradient with
    dequantised values. For forward KL it is 1e-3 off in relative terms; a bf16 teacher is 1e-2 off. For
    reverse KL with the uniform tail it is 4e-3 off, because the tail mass 1 − Σp adds up the rounding errors of
    the top-k.
    """

    max_prob_error: float = 5e-4
    max_log_error: float = 0.025
    min_logprob: float = -30.0

    def __post_init__(self) -> None:
        if not (0 < self.max_prob_error < 0.25 and 0 < self.max_log_error < 1 and self.min_logprob < 0):
            raise ValueError(f"bad quantiser settings: {self}")
        if self.levels > 65536:
            raise ValueError(f"{self} needs {self.levels} codes, more than uint16 holds")

    @cached_property
    def _linear_codes(self) -> int:
        """The last code of the linear-in-p part (its probability is the first ≥ p0)."""
        p0 = self.max_prob_error / self.max_log_error
        return max(0, math.floor((1 - p0) / (2 * self.max_prob_error) + 1e-9))

    @property
    def window_start(self) -> int:
        """The first of the codes stored in one byte: the level of p0."""
        return self._linear_codes

    @cached_property
    def levels(self) -> int:
        last_linear = math.log(1 - 2 * self.max_prob_error * self._linear_codes)
        log_codes = math.ceil((last_linear - self.min_logprob) / (2 * self.max_log_error))
        return self._linear_codes + 1 + max(0, log_codes)

    def table(self) -> np.ndarray:
        """The log-prob of each code (float64, decreasing from 0)."""
        a = self._linear_codes
        linear = np.log1p(-2 * self.max_prob_error * np.arange(a + 1))
        steps = np.arange(1, self.levels - a)
        return np.concatenate([linear, linear[-1] - 2 * self.max_log_error * steps])

    def encode(self, logprobs: np.ndarray) -> np.ndarray:
        values = np.asarray(logprobs, dtype=np.float64)
        if np.isnan(values).any():
            raise ValueError("NaN log-probs")
        values = np.clip(values, self.min_logprob, 0.0)
        a = self._linear_codes
        edge = 1 - 2 * self.max_prob_error * a
        p = np.exp(values)
        linear = np.rint((1 - p) / (2 * self.max_prob_error))
        log_part = a + np.rint((math.log(edge) - values) / (2 * self.max_log_error))
        codes = np.where(p >= edge, np.minimum(linear, a), np.maximum(log_part, a))
        return np.minimum(codes, self.levels - 1).astype(np.uint16)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self._table32[codes]

    @cached_property
    def _table32(self) -> np.ndarray:
        return self.table().astype(np.float32)

    def describe(self) -> dict[str, Any]:
        return {"scheme": QUANTISER_SCHEME, **asdict(self)}


# encoding of one example --------------------------------------------------------------------------------


def _id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def _planes(values: np.ndarray) -> bytes:
    """The bytes of each value, grouped by position: byte 0 of every value, then byte 1, and so on."""
    return np.ascontiguousarray(values.reshape(-1).view(np.uint8).reshape(-1, values.dtype.itemsize).T).tobytes()


def _unplanes(raw: bytes | memoryview, count: int, dtype: np.dtype) -> np.ndarray:
    planes = np.frombuffer(raw, dtype=np.uint8, count=count * dtype.itemsize).reshape(dtype.itemsize, count)
    return np.ascontiguousarray(planes.T).view(dtype).reshape(count)


def encode_example(
    ids: np.ndarray, logprobs: np.ndarray, vocab_size: int, quantiser: LogprobQuantiser, level: int = 6
) -> bytes:
    """One example's ``[T, k]`` ids and log-probs as a compressed block."""
    order = np.argsort(ids, axis=1, kind="stable")
    ids = np.take_along_axis(ids, order, axis=1)
    logprobs = np.take_along_axis(logprobs, order, axis=1)
    if ids.size and (ids[:, 0].min() < 0 or ids[:, -1].max() >= vocab_size):
        raise ValueError(f"token ids must be in [0, {vocab_size})")
    gaps = np.diff(ids, axis=1, prepend=0)
    if ids.shape[1] > 1 and ids.size and gaps[:, 1:].min() == 0:
        raise ValueError("token ids repeat within a row")
    codes = quantiser.encode(logprobs).reshape(-1)
    window = codes.astype(np.int64) - quantiser.window_start
    escaped = (window < 0) | (window >= ESCAPE)
    code_bytes = np.where(escaped, ESCAPE, window).astype(np.uint8)
    escapes = codes[escaped].astype("<u2")
    return zlib.compress(_planes(gaps.astype(_id_dtype(vocab_size))) + code_bytes.tobytes() + escapes.tobytes(), level)


def decode_example(
    block: bytes | memoryview, tokens: int, k: int, vocab_size: int, quantiser: LogprobQuantiser
) -> tuple[np.ndarray, np.ndarray]:
    """The ids (int64, sorted within rows) and log-probs (float32) of a block, both ``[tokens, k]``."""
    raw = zlib.decompress(block)
    id_dtype, count = _id_dtype(vocab_size), tokens * k
    split = count * id_dtype.itemsize
    code_bytes = np.frombuffer(raw, dtype=np.uint8, count=count, offset=split) if count else np.zeros(0, np.uint8)
    escaped = code_bytes == ESCAPE
    n_escaped = int(escaped.sum())
    if len(raw) != split + count + 2 * n_escaped:
        raise IncompleteStoreError(f"a block holds {len(raw)} bytes, not {split + count + 2 * n_escaped}")
    gaps = _unplanes(raw[:split], count, id_dtype).reshape(tokens, k)
    codes = code_bytes.astype(np.uint16) + np.uint16(quantiser.window_start)
    codes[escaped] = np.frombuffer(raw, dtype="<u2", count=n_escaped, offset=split + count)
    return np.cumsum(gaps, axis=1, dtype=np.int64), quantiser.decode(codes.reshape(tokens, k))


def top_k_logprobs(logits: Tensor, k: int, chunk_tokens: int = 512) -> TopK:
    """The top-k log-probs (temperature 1, fp32) of logits ``[..., V]``, a chunk of rows at a time."""
    rows = logits.reshape(-1, logits.shape[-1])
    ids, values = [], []
    for chunk in rows.split(chunk_tokens):
        top = torch.log_softmax(chunk.float(), dim=-1).topk(k, dim=-1)
        ids.append(top.indices)
        values.append(top.values)
    shape = (*logits.shape[:-1], k)
    if not ids:
        return TopK(torch.zeros(shape, dtype=torch.long), torch.zeros(shape))
    return TopK(torch.cat(ids).reshape(shape), torch.cat(values).reshape(shape))


# writer -------------------------------------------------------------------------------------------------


class LogitsStoreWriter:
    """Appends examples to a new store, and finalises it at `close`.

    Opening a writer where an unclosed ``<path>.partial`` is left resumes it. The settings must match; the
    examples already journaled are kept (see ``in``/`keys`), and the caller skips them. Each `add` is handed to
    the OS before it returns, so a killed process loses nothing it added. `close` fsyncs. A complete store at
    ``path`` is never overwritten.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        k: int,
        vocab_size: int,
        teacher: str,
        dataset_hash: str,
        quantiser: LogprobQuantiser | None = None,
        compression_level: int = 6,
        resume: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        if self.path.exists():
            raise FileExistsError(f"{self.path}: a logits store is already there (it is written once)")
        if k < 1 or vocab_size < k:
            raise ValueError(f"need 1 <= k <= vocab_size, got k={k}, vocab_size={vocab_size}")
        self.k, self.vocab_size = k, vocab_size
        self.quantiser = quantiser or LogprobQuantiser()
        self.level = compression_level
        self.meta: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "k": k,
            "vocab_size": vocab_size,
            "teacher": teacher,
            "dataset_hash": dataset_hash,
            "quantisation": self.quantiser.describe(),
            "ids": f"sorted, gap-coded, {_id_dtype(vocab_size).name}",
            "codec": f"id byte planes + code bytes + uint16 escapes, zlib level {compression_level}",
            "alignment": "row t is the teacher's distribution at position t (predicts token t + 1)",
            "extra": extra or {},
        }
        self._keys: list[str] = []
        self._rows: list[tuple[int, int, int]] = []  # offset, nbytes, tokens
        self._positions: dict[str, int] = {}
        self._lock = _lock(self.partial) if self.partial.is_dir() else None
        if resume and (self.partial / META).is_file():
            self._recover()
        else:
            _remove_tree(self.partial)
            self.partial.mkdir(parents=True)
            self._lock = _lock(self.partial)
            _write_json(self.partial / META, {**self.meta, "complete": False})
            (self.partial / DATA).touch()
            (self.partial / JOURNAL).touch()
        self._data = open(self.partial / DATA, "ab")  # noqa: SIM115 (held until close)
        self._journal = open(self.partial / JOURNAL, "a", encoding="utf-8")  # noqa: SIM115
        self._closed = False

    @property
    def keys(self) -> list[str]:
        return list(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._positions

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: str, ids: np.ndarray | Tensor, logprobs: np.ndarray | Tensor) -> None:
        """Append one example: ``[T, k]`` token ids and their log-probs, in any order within a row."""
        if self._closed:
            raise ValueError("the writer is closed")
        if key in self._positions:
            raise ValueError(f"example {key!r} is already in the store")
        ids_np, logprobs_np = _as_numpy(ids, np.int64), _as_numpy(logprobs, np.float64)
        if ids_np.ndim != 2 or ids_np.shape[1] != self.k or ids_np.shape != logprobs_np.shape:
            raise ValueError(
                f"expected ids and logprobs of shape [T, {self.k}], got {ids_np.shape}, {logprobs_np.shape}"
            )
        block = encode_example(ids_np, logprobs_np, self.vocab_size, self.quantiser, self.level)
        offset = self._end
        self._data.write(block)
        self._data.flush()
        record = {"key": key, "offset": offset, "nbytes": len(block), "tokens": int(ids_np.shape[0])}
        self._journal.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._journal.flush()
        self._append(key, offset, len(block), int(ids_np.shape[0]))

    def close(self) -> Path:
        """Write the index and the metadata, then move the store into place. Returns its path."""
        if self._closed:
            return self.path
        self._data.flush()
        os.fsync(self._data.fileno())
        self._data.close()
        self._journal.close()
        index = np.array(self._rows, dtype=np.int64).reshape(-1, 3)
        with open(self.partial / INDEX, "wb") as handle:
            np.save(handle, index)
            handle.flush()
            os.fsync(handle.fileno())
        _write_json(self.partial / KEYS, self._keys, indent=None)
        tokens = int(index[:, 2].sum())
        meta = {**self.meta, "complete": True, "examples": len(self._keys), "tokens": tokens, "data_bytes": self._end}
        _write_json(self.partial / META, meta)
        (self.partial / JOURNAL).unlink()
        (self.partial / LOCK).unlink()
        _fsync_dir(self.partial)
        os.replace(self.partial, self.path)
        _fsync_dir(self.path.parent)
        self._release()
        return self.path

    def __enter__(self) -> LogitsStoreWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:  # leave the partial store to be resumed
            self._data.close()
            self._journal.close()
            self._release()

    def _release(self) -> None:
        self._closed = True
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def _end(self) -> int:
        if not self._rows:
            return 0
        offset, nbytes, _ = self._rows[-1]
        return offset + nbytes

    def _append(self, key: str, offset: int, nbytes: int, tokens: int) -> None:
        self._positions[key] = len(self._keys)
        self._keys.append(key)
        self._rows.append((offset, nbytes, tokens))

    def _recover(self) -> None:
        """Keep the journaled examples whose blocks are whole on disk; cut everything after them."""
        found = json.loads((self.partial / META).read_text(encoding="utf-8"))
        settings = ("format", "version", "k", "vocab_size", "teacher", "dataset_hash", "quantisation", "ids")
        different = [name for name in settings if found.get(name) != self.meta[name]]
        if different:
            raise ValueError(
                f"{self.partial}: an unfinished store with other settings ({', '.join(different)}); delete it"
            )
        size = (self.partial / DATA).stat().st_size
        journal = self.partial / JOURNAL
        lines = journal.read_text(encoding="utf-8").splitlines() if journal.is_file() else []
        for line in lines:
            try:
                record = json.loads(line)
                key, offset, nbytes, tokens = record["key"], record["offset"], record["nbytes"], record["tokens"]
            except (ValueError, KeyError, TypeError):
                break  # a torn last line
            if offset != self._end or offset + nbytes > size or key in self._positions:
                break
            self._append(key, offset, nbytes, tokens)
        with open(self.partial / DATA, "r+b") as handle:
            handle.truncate(self._end)
        kept = "".join(
            json.dumps({"key": key, "offset": o, "nbytes": n, "tokens": t}, ensure_ascii=False) + "\n"
            for key, (o, n, t) in zip(self._keys, self._rows, strict=True)
        )
        _write_text(journal, kept)


# reader -------------------------------------------------------------------------------------------------


class LogitsStore:
    """Read access to a closed store: by example key or index, one example or a padded batch."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        if not (self.path / META).is_file():
            if partial.exists():
                raise IncompleteStoreError(
                    f"{self.path}: never closed (the writer crashed or is still running); "
                    f"open a LogitsStoreWriter on it to resume"
                )
            raise IncompleteStoreError(f"{self.path}: no logits store here")
        try:
            self.meta: dict[str, Any] = json.loads((self.path / META).read_text(encoding="utf-8"))
        except ValueError as error:
            raise IncompleteStoreError(f"{self.path / META}: unreadable ({error})") from error
        if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise IncompleteStoreError(f"{self.path}: not a {FORMAT} v{VERSION} store")
        if not self.meta.get("complete"):
            raise IncompleteStoreError(f"{self.path}: not marked complete")
        self.k: int = self.meta["k"]
        self.vocab_size: int = self.meta["vocab_size"]
        settings = dict(self.meta["quantisation"])
        if settings.pop("scheme", None) != QUANTISER_SCHEME:
            raise IncompleteStoreError(f"{self.path}: unknown quantisation {self.meta['quantisation']}")
        self.quantiser = LogprobQuantiser(**settings)
        self._index = np.load(self.path / INDEX)
        self._keys: list[str] = json.loads((self.path / KEYS).read_text(encoding="utf-8"))
        self._check_sizes()
        self._positions = {key: i for i, key in enumerate(self._keys)}
        size = self.meta["data_bytes"]
        self._data = np.memmap(self.path / DATA, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)

    @property
    def keys(self) -> list[str]:
        return list(self._keys)

    @property
    def teacher(self) -> str:
        return self.meta["teacher"]

    @property
    def dataset_hash(self) -> str:
        return self.meta["dataset_hash"]

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._positions

    def index_of(self, key: str) -> int:
        try:
            return self._positions[key]
        except KeyError:
            raise KeyError(f"example {key!r} is not in {self.path}") from None

    def tokens(self, item: str | int) -> int:
        return int(self._index[self._position(item), 2])

    def get(self, item: str | int) -> TopK:
        """One example by key or index: ids int64 ``[T, k]`` (sorted within rows) and log-probs float32 ``[T, k]``."""
        offset, nbytes, tokens = (int(v) for v in self._index[self._position(item)])
        ids, logprobs = decode_example(
            memoryview(self._data[offset : offset + nbytes]), tokens, self.k, self.vocab_size, self.quantiser
        )
        return TopK(torch.from_numpy(ids), torch.from_numpy(logprobs))

    def __getitem__(self, item: str | int) -> TopK:
        return self.get(item)

    def bytes_per_token(self) -> float:
        """All the store's files on disk, divided by the number of tokens."""
        total = sum(path.stat().st_size for path in self.path.iterdir() if path.is_file())
        tokens = int(self.meta["tokens"])
        return total / tokens if tokens else math.nan

    def _position(self, item: str | int) -> int:
        if isinstance(item, str):
            return self.index_of(item)
        if not -len(self._keys) <= item < len(self._keys):
            raise IndexError(f"example {item} out of range ({len(self._keys)} examples)")
        return item % len(self._keys)

    def _check_sizes(self) -> None:
        data = self.path / DATA
        examples, end = self.meta["examples"], self.meta["data_bytes"]
        problems = []
        if not data.is_file() or data.stat().st_size != end:
            problems.append(f"data.bin holds {data.stat().st_size if data.is_file() else 0} bytes, not {end}")
        if self._index.shape != (examples, 3) or len(self._keys) != examples:
            problems.append(f"index or keys do not list {examples} examples")
        elif examples and int(self._index[-1, 0] + self._index[-1, 1]) != end:
            problems.append("the index does not end where the data does")
        if problems:
            raise IncompleteStoreError(f"{self.path}: truncated or corrupted: {'; '.join(problems)}")


# files --------------------------------------------------------------------------------------------------


def _as_numpy(values: np.ndarray | Tensor | Sequence[Any], dtype: type) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu()
        values = values.double() if values.is_floating_point() else values.long()
        return values.numpy().astype(dtype, copy=False)
    return np.asarray(values).astype(dtype, copy=False)


def _write_text(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _write_json(path: Path, value: Any, indent: int | None = 1) -> None:
    _write_text(path, json.dumps(value, indent=indent, ensure_ascii=False))


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _lock(folder: Path) -> IO[bytes]:
    """An exclusive lock on the partial store, so that two writers never append to it at once."""
    handle = open(folder / LOCK, "ab")  # noqa: SIM115 (held until the writer closes)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise AlambicError(f"{folder}: another writer is filling this logits store") from None
    return handle


def _remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
