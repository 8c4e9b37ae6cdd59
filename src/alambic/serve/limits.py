"""Per-key request and token budgets (token buckets refilled each minute) and the bounded queue in front of the
one model: a request over budget is told when to come back (429), one that finds the queue full too (503)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from alambic.config import LimitsSection


class OverLimit(Exception):
    def __init__(self, status: int, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.retry_after = max(1, math.ceil(retry_after))


@dataclass
class Bucket:
    """`per_minute` units, refilled continuously. Tokens are charged after the answer, so a bucket may go into
    debt; then nothing more is let through until it is out of it."""

    per_minute: int
    level: float = field(init=False)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.level = float(self.per_minute)

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.per_minute, self.level + (now - self.updated) * self.per_minute / 60)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` units are there; 0 if they are now."""
        self._refill()
        return 0.0 if self.level >= amount else (amount - self.level) * 60 / self.per_minute

    def charge(self, amount: float) -> None:
        self._refill()
        self.level -= amount


class KeyBudgets:
    def __init__(self, limits: LimitsSection) -> None:
        self.limits = limits
        self._requests: dict[str, Bucket] = {}
        self._tokens: dict[str, Bucket] = {}

    def admit(self, key_id: str, overrides: dict[str, int]) -> None:
        """Count one request against the key, or raise OverLimit (429)."""
        requests = self._bucket(self._requests, key_id, overrides.get("requests_per_minute"))
        tokens = self._bucket(self._tokens, key_id, overrides.get("tokens_per_minute"))
        if wait := requests.wait_for(1):
            raise OverLimit(429, f"rate limit: {requests.per_minute} requests per minute for this key", wait)
        if wait := tokens.wait_for(1):
            raise OverLimit(429, f"rate limit: {tokens.per_minute} tokens per minute for this key", wait)
        requests.charge(1)

    def charge_tokens(self, key_id: str, tokens: int) -> None:
        self._tokens[key_id].charge(tokens)

    def _bucket(self, buckets: dict[str, Bucket], key_id: str, override: int | None) -> Bucket:
        default = self.limits.requests_per_minute if buckets is self._requests else self.limits.tokens_per_minute
        per_minute = override or default
        if key_id not in buckets or buckets[key_id].per_minute != per_minute:
            buckets[key_id] = Bucket(per_minute)
        return buckets[key_id]


class ModelQueue:
    """One answer at a time from the model, with at most `size` requests waiting."""

    def __init__(self, size: int, typical_seconds: float = 2.0) -> None:
        self.size, self.typical_seconds = size, typical_seconds
        self.waiting = 0
        self._turn = asyncio.Semaphore(1)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self.waiting >= self.size:
            raise OverLimit(503, f"the server is busy: {self.size} requests are waiting", self.typical_seconds)
        self.waiting += 1
        try:
            await self._turn.acquire()
        finally:
            self.waiting -= 1
        began = time.monotonic()
        try:
            yield
        finally:
            self._turn.release()
            self.typical_seconds = 0.8 * self.typical_seconds + 0.2 * (time.monotonic() - began)
