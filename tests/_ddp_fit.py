"""Worker for test_train_engine's DDP check: fit a tiny model, rank 0 saves its weights.

Run as ``python -m torch.distributed.run --nproc_per_node=N tests/_ddp_fit.py OUT_DIR`` or
directly (single process).
"""

import sys

import torch
from torch import nn
from torch.utils.data import TensorDataset

from sdkd.train import Trainer, init_distributed
from sdkd.train.distributed import leave_torchrun


def make_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 2, 1, 4, 4, generator=g)
    y = torch.roll(x, 1, dims=-1) * 0.5
    return TensorDataset(x[:24], y[:24]), TensorDataset(x[24:], y[24:])


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        b, t, c, h, w = x.shape
        return self.conv(x.reshape(b, t * c, h, w)).reshape(b, t, c, h, w)


def main(out_dir: str) -> None:
    info = init_distributed("cpu")
    torch.manual_seed(0)
    model = Tiny()
    train, val = make_data()
    cfg = {"epochs": 3, "lr": 1e-2, "patience": 0, "clip_grad": 0, "progress": False}
    Trainer(
        model, train, val, cfg, out_dir, batch_size=8, seed=42, device="cpu", dist_info=info, log=lambda m: None
    ).fit()
    if info.is_main:
        torch.save(model.state_dict(), f"{out_dir}/weights.pt")
    leave_torchrun(0)  # under torchrun: barrier, destroy the group, exit at once (what the sdkd CLI does)


if __name__ == "__main__":
    main(sys.argv[1])
