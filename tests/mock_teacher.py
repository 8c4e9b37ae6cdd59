"""A loopback stand-in for a remote OpenAI-compatible teacher, with fixed latency and injected faults.

Run: python -m tests.mock_teacher --port 8100 --latency 0.2 --tokens 64 --fault-rate 0.2

Replies are a pure function of the request, so a retried or re-sent request gets the same text: lines of
questions, a refusal when the system prompt asks to refuse, or JSON that fits a requested schema.
Whether an attempt faults is drawn per (request, attempt); the kinds of fault take turns: 429 with
Retry-After, 500, 503, a hang past the client's timeout, malformed JSON, and a body cut short.
GET /stats tells what was asked and answered.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
from collections import Counter

FAULTS = ("429", "500", "503", "hang", "malformed", "cut")


class MockTeacher:
    def __init__(self, latency: float, tokens: int, fault_rate: float, hang_s: float) -> None:
        self.latency, self.tokens, self.fault_rate, self.hang_s = latency, tokens, fault_rate, hang_s
        self.attempts: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.answered_seeds: list[int] = []

    def reply_text(self, seed: int, request: dict | None = None) -> str:
        request = request or {}
        system = next((m["content"] for m in request.get("messages", []) if m["role"] == "system"), "")
        if "reviewer" in system:
            return judgement(request)
        schema = ((request.get("response_format") or {}).get("json_schema") or {}).get("schema")
        if schema is None:
            schema = (request.get("response_format") or {}).get("schema")
        if schema is not None:
            return json.dumps(schema_instance(schema, seed))
        user = next((m["content"] for m in request.get("messages", []) if m["role"] == "user"), "")
        if "shortest phrase that answers" in system:  # synth's answer facts: the reference text's first words
            return reference_opening(user) if seed % 4 else "NONE"
        if "does not refuse harmless questions" in system:  # the safety stage's XSTest-style questions
            word = re.search(r'uses the word "([^"]+)"', user)
            return f'"How do I {word.group(1) if word else "fix"} the squeak in my grinder?"\nThat fits the shop.'
        if "refuse" in system:
            return f"I'm sorry, but I can't help with that. Instead I can offer {varied(seed, 0, 6)}."
        words_per_line = 8
        lines = [f"Is {varied(seed, i, 6)} today?" for i in range(self.tokens // words_per_line)]
        if "rewrite customer questions" in system:  # asked for one new question only
            return lines[0]
        if "Reference text:" in user and "Customer question:" in user:  # an answer from a chunk quotes it
            return f"{reference_opening(user)}.\n" + "\n".join(lines)
        return "\n".join(lines)

    def fault_for(self, body: bytes) -> str | None:
        digest = hashlib.sha256(body).hexdigest()
        self.attempts[digest] += 1
        draw = hashlib.sha256(f"{digest}:{self.attempts[digest]}".encode()).digest()
        if int.from_bytes(draw[:4], "big") / 2**32 >= self.fault_rate:
            return None
        fault = FAULTS[sum(self.faults.values()) % len(FAULTS)]  # round robin, so every kind shows up
        self.faults[fault] += 1
        return fault

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    break
                method, path, _ = request_line.decode().split(" ", 2)
                headers = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                if not await self.respond(method, path, body, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def respond(self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        """Write one response; False when the connection must be dropped."""
        if method == "GET" and path.endswith("/models"):
            return await send(writer, 200, json.dumps({"object": "list", "data": [{"id": "mock"}]}).encode())
        if method == "GET" and path == "/stats":
            stats = {
                "answered_seeds": self.answered_seeds,
                "faults": self.faults,
                "requests": sum(self.attempts.values()),
            }
            return await send(writer, 200, json.dumps(stats).encode())
        if method == "POST" and path == "/reset":
            self.attempts.clear(), self.faults.clear(), self.answered_seeds.clear()
            return await send(writer, 200, b"{}")
        if not path.endswith("/chat/completions"):
            return await send(writer, 404, b'{"error": "not found"}')
        request = json.loads(body)
        fault = self.fault_for(body)
        await asyncio.sleep(self.latency)
        if fault == "429":
            return await send(writer, 429, b'{"error": "slow down"}', extra="Retry-After: 0.1\r\n")
        if fault in ("500", "503"):
            return await send(writer, int(fault), b'{"error": "teacher unavailable"}')
        if fault == "hang":
            await asyncio.sleep(self.hang_s)
            return False
        if fault == "malformed":
            return await send(writer, 200, b'{"choices": [{"message": ')
        seed = int(request.get("seed") or 0)
        reply = {
            "id": f"mock-{seed}",
            "object": "chat.completion",
            "model": request.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.reply_text(seed, request)},
                    "finish_reason": "stop",
                    "logprobs": token_logprobs(request, self.tokens),
                }
            ],
            "usage": {"prompt_tokens": len(body) // 4, "completion_tokens": self.tokens},
        }
        payload = sse_events(reply) if request.get("stream") else json.dumps(reply).encode()
        if fault == "cut":
            # The whole length is announced, then the connection drops part-way: a body or stream cut short.
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload[:60])
            await writer.drain()
            return False
        self.answered_seeds.append(seed)
        content_type = "text/event-stream" if request.get("stream") else "application/json"
        return await send(writer, 200, payload, content_type=content_type)


def sse_events(reply: dict) -> bytes:
    """The reply as an OpenAI chat-completion stream: one event per line of text, usage, then [DONE]."""
    choice = reply["choices"][0]
    text = choice["message"]["content"]
    pieces = [line + "\n" for line in text.split("\n")[:-1]] + [text.split("\n")[-1]]
    events = []
    for i, piece in enumerate(pieces):
        delta: dict = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
        if choice.get("logprobs") and i == 0:
            delta["logprobs"] = choice["logprobs"]
        events.append({"id": reply["id"], "choices": [delta]})
    events.append({"id": reply["id"], "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]})
    events.append({"id": reply["id"], "choices": [], "usage": reply["usage"]})
    lines = [f"data: {json.dumps(event)}\n\n" for event in events] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


VOCABULARY = [
    "coffee",
    "beans",
    "roast",
    "parcel",
    "refund",
    "grinder",
    "espresso",
    "filter",
    "kettle",
    "order",
    "delivery",
    "shop",
    "harbour",
    "street",
    "monday",
    "thursday",
    "sealed",
    "bag",
    "gift",
    "card",
    "decaf",
    "yemen",
    "ethiopia",
    "colombia",
    "brew",
    "milk",
    "cup",
    "price",
    "euro",
    "discount",
    "return",
    "label",
    "courier",
    "week",
    "morning",
    "evening",
    "staff",
    "barista",
    "tasting",
    "note",
    "fruity",
    "chocolate",
    "nutty",
    "light",
    "dark",
    "medium",
    "fresh",
    "stock",
    "sample",
    "subscription",
    "account",
    "invoice",
    "address",
    "phone",
    "email",
    "weekend",
    "holiday",
]


def reference_opening(user: str) -> str:
    """The first words of the reference text in a prompt, after its heading line."""
    reference = user.split("Reference text:", 1)[-1].split("Customer question:", 1)[0].strip()
    heading, _, body = reference.partition("\n")
    return " ".join((body if body.strip() else heading).split()[:6])


def varied(seed: int, index: int, count: int) -> str:
    """`count` words picked by a hash of (seed, index): different requests get unrelated texts."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return " ".join(VOCABULARY[digest[i] % len(VOCABULARY)] for i in range(count))


def judgement(request: dict) -> str:
    """A consistent judge: the same conversation gets the same scores (2 to 5), whatever the seed."""
    digest = hashlib.sha256(json.dumps(request["messages"]).encode()).digest()
    score = 2 + digest[0] % 4
    return json.dumps({"grounded": score, "helpful": score, "correct": score, "reason": "mock"})


def schema_instance(schema: dict, seed: int, index: int = 0) -> object:
    """A value that fits a JSON schema (objects, arrays, enums, strings); array items take enums in turn."""
    if "enum" in schema:
        return schema["enum"][index % len(schema["enum"])]
    if schema.get("type") == "object":
        return {name: schema_instance(sub, seed, index) for name, sub in schema.get("properties", {}).items()}
    if schema.get("type") == "array":
        return [schema_instance(schema["items"], seed, i) for i in range(schema.get("minItems", 1))]
    return f"Reply {index}: {varied(seed, index, 8)}."


def token_logprobs(request: dict, tokens: int) -> dict | None:
    """OpenAI-style per-token logprobs with `top_logprobs` alternatives, when the request asks for them."""
    if not request.get("logprobs"):
        return None
    k = int(request.get("top_logprobs") or 0)
    content = []
    for i in range(tokens):
        top = [{"token": f"t{i}_{j}", "logprob": -0.1 - j, "bytes": None} for j in range(k)]
        content.append({"token": f"t{i}_0", "logprob": -0.1, "bytes": None, "top_logprobs": top})
    return {"content": content}


async def send(
    writer: asyncio.StreamWriter, status: int, body: bytes, extra: str = "", content_type: str = "application/json"
) -> bool:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    return True


async def serve(port: int, teacher: MockTeacher) -> None:
    server = await asyncio.start_server(teacher.handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--hang", type=float, default=30.0)
    args = parser.parse_args()
    asyncio.run(serve(args.port, MockTeacher(args.latency, args.tokens, args.fault_rate, args.hang)))


if __name__ == "__main__":
    main()
