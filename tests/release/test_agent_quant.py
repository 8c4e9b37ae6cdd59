"""The agent's hand-off is calibrated on the GGUF it is served from: serving another released quantisation makes
the release again, so the calibration is never another model's."""

import shutil
from pathlib import Path

from tests.conftest import run_cli


def test_serving_another_quantisation_releases_again(finished_project: Path, tmp_path: Path) -> None:
    root = tmp_path / "shop"
    shutil.copytree(finished_project, root)
    config = root / "alambic.toml"
    text = config.read_text(encoding="utf-8")
    assert 'gguf = ["f16"]' in text and 'quant = "f16"' in text
    config.write_text(text.replace('gguf = ["f16"]', 'gguf = ["f16", "q8_0"]'), encoding="utf-8")
    assert "already done" not in run_cli("release", "--project", root).stderr  # a new file to write
    assert "already done" in run_cli("release", "--project", root).stderr
    config.write_text(config.read_text(encoding="utf-8").replace('quant = "f16"', 'quant = "q8_0"'), encoding="utf-8")
    assert "already done" not in run_cli("release", "--project", root).stderr
