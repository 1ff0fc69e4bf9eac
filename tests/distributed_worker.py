"""Run by torchrun from tests/test_training.py: one process of a data-parallel training step.

Each process computes the gradients of its half of a batch through the same code the training
loop uses (``distributed.data_parallel``) and saves them; then trains a few steps into a
folder, as ``itkdeepreg.train.train`` does under torchrun.
"""

import sys

import torch
import torch.distributed as dist

from itkdeepreg.train import distributed
from itkdeepreg.train.objectives import Objective

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from training_fixtures import BATCH, gradients, pair_batch, small_unet  # noqa: E402

output, dtype = sys.argv[1], getattr(torch, sys.argv[2])
rank, world_size = distributed.setup()
assert world_size == 2
model = small_unet().to(dtype)
moving, fixed = (x.to(dtype) for x in pair_batch())
half = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
step_model = distributed.data_parallel(model)
terms = Objective("mse").at(0)(
    step_model, moving[half], fixed[half], torch.Generator().manual_seed(0)
)
terms["loss"].backward()
torch.save(gradients(model), f"{output}/gradients_{rank}.pt")
dist.barrier()
