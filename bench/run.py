"""Run benchmark groups: `python bench/run.py [GROUP ...]`. Each group prints one line per figure and
writes bench/out/<group>.json, a list of {figure, value, unit, peer, peer_value, ratio, goal}."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GROUPS = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(names: list[str]) -> int:
    sys.path.insert(0, str(HERE))
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        print(
            f"unknown benchmark group(s): {', '.join(unknown)}; choose from {', '.join(GROUPS)}",
            file=sys.stderr,
        )
        return 2
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    for name in names or GROUPS:
        figures = importlib.import_module(f"bench_{name}").run()
        for f in figures:
            print(
                f"{f['figure']}: {f['value']:.4g} {f['unit']} vs {f['peer']} {f['peer_value']:.4g} "
                f"-> ratio {f['ratio']:.3f} (goal {f['goal']})"
            )
        (out / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
