"""How tests/data/ledger-v3 was made: a small project taken through the whole loop by alambic as of commit fbb8e9c,
the last one before typed stage results (ledger schema v3), with the dataset that code read from it.

Run from the root of a checkout of fbb8e9c, with its environment: `python -m tests.data.make_ledger_v3 OUT`, then copy
OUT/shop/alambic.toml, OUT/shop/docs, OUT/shop/.alambic/ledger.sqlite and OUT/expected.json here.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from alambic.store.datasets import latest_synth_run, split_items  # type: ignore[import-not-found]
from tests.conftest import small_config, write_project
from transformers import LlamaConfig, LlamaForCausalLM

from alambic.models.embedded import embedded_hf_dir
from alambic.models.hf import load_tokenizer
from alambic.store import Ledger


# The same tiny Llama as tests/conftest.py's fixture, written out here because fbb8e9c's conftest has it only as a
# pytest fixture, which a script run against that checkout cannot call.
def tiny_llama(path: Path) -> Path:
    torch.manual_seed(0)
    tokenizer = load_tokenizer(embedded_hf_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        initializer_range=0.2,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def main(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    root = write_project(out / "shop", small_config(tiny_llama(out / "tiny"), curate="judge = false"))
    subprocess.run([sys.executable, "-m", "alambic", "run", "--project", str(root)], check=True)
    with Ledger(root / ".alambic" / "ledger.sqlite") as ledger:
        dataset = split_items(ledger, latest_synth_run(ledger))
    expected = {split: [item.key for item in items] for split, items in dataset.items()}
    (out / "expected.json").write_text(json.dumps(expected, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
