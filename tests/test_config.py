from pathlib import Path

import pytest

from alambic.config import load_config
from alambic.errors import AlambicError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "alambic.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_embedded_loop(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.teacher.backend == "llamacpp" and config.teacher.model == "embedded"
    assert config.distill.prune_layers is None  # the embedded base is small already: keep every layer
    assert config.synth.heldout_fraction == 0.1


def test_quick_preset_overrides_only_what_it_names(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[distill]\nlearning_rate = 0.001\n"), preset="quick")
    assert config.distill.epochs == 1.0
    assert config.distill.learning_rate == 0.001


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[synth\nx = 1", "invalid TOML"),
        ("[synth]\nchunk_size = 10\n", r"\[synth.chunk_size\] Extra inputs are not permitted"),
        ("[teachr]\nmodel = 'x'\n", r"\[teachr\]"),
        ("[distill]\nepochs = 'three'\n", r"\[distill.epochs\]"),
        ("[teacher]\nbackend = 'openai'\n", r"\[teacher\] Value error, backend 'openai' needs base_url"),
    ],
)
def test_bad_config_names_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(AlambicError, match=message) as error:
        load_config(write(tmp_path, text))
    assert str(tmp_path / "alambic.toml") in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_preset_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AlambicError, match="unknown preset 'fast'"):
        load_config(write(tmp_path, ""), preset="fast")
