"""`make scan`: garak (from .venv-scan) against the served agent of a released project (SCAN_PROJECT, default
demo-shop), through garak's OpenAI-compatible generator, and against the bare student: the same GGUF served by
llama-cpp-python's server, without the guard. A cheap probe set, one generation per prompt, at most
SCAN_PROMPTS prompts per probe. Writes garak's reports to bench/out/scan/ and a summary, the pass rate of each
probe for each target, to bench/out/scan.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from alambic.guard.refusal import is_refusal
from alambic.project import Project
from alambic.results import ReleaseResult
from alambic.serve.keys import create_key

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from servers import free_port, server  # noqa: E402

OUT = REPO / "bench" / "out"
GARAK = REPO / ".venv-scan" / "bin" / "garak"
PROBES = [
    "dan.Ablation_Dan_11_0",
    "promptinject.HijackHateHumans",
    "encoding.InjectBase64",
    "latentinjection.LatentInjectionFactSnippetEiffel",
    "donotanswer.MaliciousUses",
]
PROMPTS_PER_PROBE = int(os.environ.get("SCAN_PROMPTS", "12"))


def garak(target: str, url: str, model: str, key: str) -> Path:
    """Run the probes against one target; the path of garak's JSONL report."""
    report_dir = OUT / "scan"
    report_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "run": {"generations": 1, "soft_probe_prompt_cap": PROMPTS_PER_PROBE, "seed": 7},
        "system": {"parallel_attempts": False, "lite": True},
        "plugins": {
            "target_type": "openai.OpenAICompatible",
            "target_name": model,
            "probe_spec": ",".join(PROBES),
            "generators": {
                "openai": {"OpenAICompatible": {"uri": url, "max_tokens": 96, "stop": [], "temperature": 0.0}}
            },
        },
        "reporting": {"report_dir": str(report_dir), "report_prefix": target},
    }
    config_path = report_dir / f"{target}.config.json"
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    environment = os.environ | {"OPENAICOMPATIBLE_API_KEY": key, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run([str(GARAK), "--config", str(config_path)], check=True, env=environment, cwd=report_dir)
    return report_dir / f"{target}.report.jsonl"


def pass_rates(report: Path, refusal_message: str) -> list[dict]:
    """Per probe and detector, garak's verdicts: passed of evaluated, and `nones`, prompts that got no answer
    (the server turned them away, e.g. as longer than the agent reads). Per probe, beside them, the share of
    answers that are a refusal (alambic's check, which knows the business's refusal message; garak's string
    detectors look for their own phrases)."""
    rows: list[dict] = []
    answered: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for line in report.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("entry_type") == "eval":
            evaluated = int(entry["total_evaluated"])
            rows.append(
                {
                    "probe": entry["probe"],
                    "detector": entry["detector"],
                    "passed": int(entry["passed"]),
                    "evaluated": evaluated,
                    "no_answer": int(entry.get("nones", 0)),
                    "pass_rate": entry["passed"] / evaluated if evaluated else None,
                }
            )
        elif entry.get("entry_type") == "attempt" and entry.get("status") == 2:
            for output in entry.get("outputs") or []:
                if output and output.get("text") is not None:
                    counts = answered[entry["probe_classname"]]
                    counts[0] += is_refusal(output["text"], refusal_message)
                    counts[1] += 1
    for row in rows:
        refused, total = answered.get(row["probe"], [0, 0])
        row["refused"] = refused / total if total else None
    return rows


def summarise(results: dict[str, list[dict]]) -> None:
    summary = [{"target": target, **row} for target, rows in results.items() for row in rows]
    (OUT / "scan.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"{'target':<26} {'probe':<50} {'detector':<28} {'pass':>5} {'refused':>7}  passed/evaluated, no answer")
    for row in summary:
        rate = "n/a" if row["pass_rate"] is None else f"{row['pass_rate']:.2f}"
        refused = "n/a" if row["refused"] is None else f"{row['refused']:.2f}"
        print(
            f"{row['target']:<26} {row['probe']:<50} {row['detector']:<28} {rate:>5} {refused:>7}  "
            f"{row['passed']}/{row['evaluated']}, {row['no_answer']}"
        )


def main() -> int:
    if not GARAK.is_file():
        raise SystemExit(f"{GARAK}: garak is not installed; run `make scan`")
    root = Path(os.environ.get("SCAN_PROJECT", REPO / "demo-shop")).resolve()
    if not (root / "alambic.toml").is_file():
        raise SystemExit(f"{root}: no project; run `make demo` first, or set SCAN_PROJECT")
    project = Project.open(root)
    release = project.ledger.latest_done("release").result(ReleaseResult)
    gguf = release.gguf[project.config.serve.quant]
    refusal = project.config.safety.resolved_refusal_message(project.config.project.business)
    name = f"scan-{int(time.time())}"
    _, key = create_key(project.ledger, name, ["chat"], {"requests_per_minute": 10**6, "tokens_per_minute": 10**8})
    results = {}
    try:
        port = free_port()
        with server(
            [sys.executable, "-m", "alambic", "serve", "--project", str(root), "--port", str(port)], port
        ) as url:
            results["agent (guarded)"] = pass_rates(garak("agent", url, "agent", key), refusal)
        port = free_port()
        bare = [sys.executable, "-m", "alambic", "teacher", "serve", "--model", gguf, "--port", str(port)]
        with server(bare, port) as url:
            results["student (bare, no guard)"] = pass_rates(
                garak("student", f"{url}/v1", Path(gguf).stem, "unused"), refusal
            )
    finally:
        project.ledger.revoke_api_key(name)
        project.close()
    summarise(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
