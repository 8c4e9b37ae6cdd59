"""The import rules of docs/architecture.md, checked on the package's source: stages import only earlier
stages' typed results (never their code), and what several stages share lives below all of them."""

import ast
from pathlib import Path

import pytest

import alambic

PACKAGE = Path(alambic.__file__).parent
# In the order data flows; safety's gate sits between evaluate and release.
STAGES = ("synth", "curate", "distill", "evaluate", "safety", "release", "serve")
# The entry point runs every stage, so it alone may import them all.
ENTRY_POINTS = {"cli", "__main__"}


def imported_modules(source: str) -> set[str]:
    """Every alambic module a source imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "alambic":
            found |= {f"alambic.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] == "alambic"}


def part(module: str) -> str:
    """The top-level part of the package a module belongs to: a stage, `models`, `store`, `text`, ..."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def broken_rules(module: str, imports: set[str]) -> list[str]:
    owner = part(module)
    if owner in ENTRY_POINTS:
        return []
    broken = []
    for name in sorted(imports):
        target = part(name)
        if target not in STAGES or target == owner:
            continue
        if owner not in STAGES:
            broken.append(f"{module} (below the stages) imports the {target} stage: {name}")
        elif STAGES.index(target) > STAGES.index(owner):
            broken.append(f"{module} imports a later stage: {name}")
        else:
            broken.append(f"{module} imports code of the {target} stage (read its typed result instead): {name}")
    return broken


def package_modules() -> dict[str, str]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(part for part in relative.parts if part != "__init__")
        modules[name] = path.read_text(encoding="utf-8")
    return modules


def test_the_package_keeps_its_import_rules() -> None:
    modules = package_modules()
    assert {"alambic.synth", "alambic.models.teacher", "alambic.cli"} <= set(modules)
    broken = [rule for name, source in modules.items() for rule in broken_rules(name, imported_modules(source))]
    assert broken == []


@pytest.mark.parametrize(
    ("module", "source", "complaint"),
    [
        ("alambic.curate.judge", "from alambic.synth.engine import Engine", "imports code of the synth stage"),
        ("alambic.evaluate", "def f():\n    from alambic.distill.train import mean_loss", "code of the distill"),
        ("alambic.curate", "from alambic.evaluate.metrics import token_f1", "imports a later stage"),
        ("alambic.synth.engine", "import alambic.release", "imports a later stage"),
        ("alambic.store.ledger", "from alambic.synth import selection", "below the stages"),
        ("alambic.models.teacher", "from alambic import curate", "below the stages"),
    ],
)
def test_each_rule_catches_its_breach(module: str, source: str, complaint: str) -> None:
    broken = broken_rules(module, imported_modules(source))
    assert len(broken) == 1 and complaint in broken[0]


def test_what_the_rules_allow() -> None:
    allowed = {
        "alambic.curate": "from alambic.models.teacher import Teacher\nfrom alambic.results import SynthResult",
        "alambic.synth.recipes.base": "from alambic.synth.engine import Engine",
        "alambic.cli": "from alambic import synth, curate, distill, evaluate, release, serve",
    }
    assert all(broken_rules(name, imported_modules(source)) == [] for name, source in allowed.items())
