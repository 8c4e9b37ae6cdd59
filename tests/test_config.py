from pathlib import Path

import pytest

from alambic.config import load_config
from alambic.errors import AlambicError
from alambic.language import language_of
from alambic.persona import creator_posts, read_replies
from alambic.project import Project, examples, init_project


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
        (
            "[[agent.tools]]\nname = 'status'\ndescription = 'd'\nsql = 'SELECT 1'\n"
            "replies = { ar = '{{ row.status' }\n",
            r"\[agent.tools.0\] Value error, tool 'status': replies.ar is not a Jinja template",
        ),
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


@pytest.mark.parametrize("example", examples())
def test_every_example_starts_a_project_whose_files_are_all_there(tmp_path: Path, example: str) -> None:
    root = init_project(tmp_path / example, example)
    config = load_config(root / "alambic.toml")
    named = [config.project.docs, *config.curate.eval_paths, config.safety.alarming_file]
    named += [
        path
        for path in (config.synth.persona.posts_file, config.synth.persona.replies_file, config.agent.database)
        if path
    ]
    assert all((root / path).exists() for path in named), named
    assert Project.open(root).documents()


def test_the_creator_example_holds_out_posts_that_synth_never_sees(tmp_path: Path) -> None:
    root = init_project(tmp_path / "creator", "creator")
    config = load_config(root / "alambic.toml")
    posts = creator_posts(config.synth.persona, root)
    replies = read_replies(root / str(config.synth.persona.replies_file))
    assert config.synth.recipes["persona-voice"] > 0 and len(posts) >= 5
    assert {r.post for r in replies if not r.heldout} <= set(posts)
    assert not {r.post for r in replies if r.heldout} & set(posts)
    assert any(language_of(r.reply) == "ar" for r in replies if r.heldout)
