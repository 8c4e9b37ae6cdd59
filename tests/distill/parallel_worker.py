"""One step's gradients from `Trainer.accumulate`, saved by the main process: run alone or under torchrun.

Usage: python tests/distill/parallel_worker.py TINY_MODEL_DIR OUT.pt BATCH_SIZE
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[2]))  # run as a script: the repository, for the tests package
from alambic.config import DistillSection
from alambic.distill.student import prune_layers
from alambic.distill.teachers import DenseTeacher, HFTeacher
from alambic.distill.train import Trainer
from alambic.models.hf import load_causal_lm, load_tokenizer
from alambic.scoring.batches import encode
from tests.scoring.test_batches import TURNS


def main(model_dir: Path, out: Path, batch_size: int) -> None:
    tokenizer = load_tokenizer(model_dir)
    examples = [
        encode(tokenizer, [{"role": "user", "content": q}, {"role": "assistant", "content": a}], 256, key=q)
        for q, a in TURNS[:5]
    ]
    settings = DistillSection(
        method="kd", batch_size=batch_size, grad_accumulation=min(2, batch_size), precision="fp32", kd_ratio=0.7
    )
    teacher = DenseTeacher(HFTeacher(model_dir, False), examples, examples, 2)
    torch.manual_seed(0)
    student = prune_layers(load_causal_lm(model_dir), [0, 3])
    trainer = Trainer(student, examples, 2, settings, out.with_suffix(".unused"), teacher)
    indices = list(range(batch_size))
    loss, tokens = trainer.accumulate(indices)
    loss, tokens = trainer.parallel.total(loss, tokens)
    grads = {name: p.grad.detach().clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    if trainer.parallel.is_main:
        torch.save({"loss": loss, "tokens": tokens, "grads": grads}, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
