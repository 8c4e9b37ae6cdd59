"""The distilabel side of synth-vs-distilabel; runs in .venv-peers, not in alambic's venv.

Usage: distilabel_synth.py REQUESTS_JSON BASE_URL CONCURRENCY WORK_DIR

REQUESTS_JSON holds the chat requests alambic sent, as [{"messages": [system, user], "sampling": {...}}].
Each becomes one TextGeneration row (system prompt + instruction) sent through OpenAILLM, with
`input_batch_size = CONCURRENCY`: distilabel's AsyncLLM sends one input batch at a time, all of its rows at
once (asyncio.gather), so that is how many requests it has in flight. Prints one JSON line:
{"seconds", "startup", "generations"}. The caller sets HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from distilabel.models import OpenAILLM
from distilabel.pipeline import Pipeline
from distilabel.steps import LoadDataFromDicts
from distilabel.steps.tasks import TextGeneration


class TimedTextGeneration(TextGeneration):
    """TextGeneration that writes (to a file, as it runs in a worker process) when it is ready to generate."""

    loaded_flag: str

    def load(self) -> None:
        super().load()
        # distilabel silences the `httpx` logger; openai>=2 logs every request through `httpx2` instead, which
        # would cost distilabel a log record per request through its queue to the main process.
        logging.getLogger("httpx2").setLevel(logging.CRITICAL)
        Path(self.loaded_flag).write_text(str(time.time()), encoding="utf-8")


def rows(requests: list[dict[str, Any]]) -> list[dict[str, str]]:
    """alambic's [system, user] messages as TextGeneration's input columns."""
    out = []
    for request in requests:
        system, user = request["messages"]
        out.append({"system_prompt": system["content"], "instruction": user["content"]})
    return out


def build(data: list[dict[str, str]], base_url: str, concurrency: int, work: Path, sampling: dict) -> Pipeline:
    with Pipeline(name="synth-vs-distilabel", cache_dir=work / "cache") as pipeline:
        llm = OpenAILLM(
            model="mock",
            base_url=base_url,
            api_key="unused",
            generation_kwargs={
                "max_new_tokens": sampling["max_tokens"],
                "temperature": sampling["temperature"],
                "top_p": sampling["top_p"],
            },
        )
        load = LoadDataFromDicts(data=data, batch_size=concurrency)
        task = TimedTextGeneration(llm=llm, input_batch_size=concurrency, loaded_flag=str(work / "loaded"))
        load >> task
    return pipeline


def main(requests_json: str, base_url: str, concurrency: str, work_dir: str) -> None:
    requests = json.loads(Path(requests_json).read_text(encoding="utf-8"))
    work = Path(work_dir)
    # One sampling for all rows (distilabel's generation_kwargs are per task): that of alambic's answers, the longest.
    sampling = max((request["sampling"] for request in requests), key=lambda sampling: sampling["max_tokens"])
    pipeline = build(rows(requests), base_url, int(concurrency), work, sampling)
    # Measured: Pipeline.run alone (worker processes, LLM client, every batch, the Distiset it returns);
    # not the interpreter start nor the imports above, as alambic's side times synth.run alone.
    began = time.time()
    distiset = pipeline.run(use_cache=False)
    seconds = time.time() - began
    generations = distiset["default"]["train"]["generation"]
    startup = float((work / "loaded").read_text(encoding="utf-8")) - began
    done = sum(text is not None for text in generations)  # distilabel fills a failed batch's rows with None
    print(json.dumps({"seconds": seconds, "startup": startup, "generations": done}))


if __name__ == "__main__":
    main(*sys.argv[1:])
