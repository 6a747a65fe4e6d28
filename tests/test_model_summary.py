"""``sdkd.models.summary``: parameter and FLOP counts checked against hand counts, latency, modes."""

import pytest
import torch
from torch import nn

from sdkd.models import ModelSummary, build_model, summary
from sdkd.models.summary import count_flops, count_parameters, measure_latency


@pytest.fixture(autouse=True)
def _one_thread():
    """The test machine is shared: one intra-op thread avoids OpenMP contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class FoldConv(nn.Module):
    """Folds time into channels and applies one k x k conv: FLOPs are easy to count by hand."""

    def __init__(self, in_shape, out_frames, k=3):
        super().__init__()
        self.in_shape, self.out_frames = in_shape, out_frames
        T, C = in_shape[:2]
        self.conv = nn.Conv2d(T * C, out_frames * C, k, padding=k // 2)
        self.frozen = nn.Parameter(torch.zeros(7), requires_grad=False)

    def forward(self, x):
        B, T, C, H, W = x.shape
        return self.conv(x.reshape(B, T * C, H, W)).reshape(B, self.out_frames, C, H, W)


def _conv_flops_by_hooks(model: nn.Module, x: torch.Tensor) -> int:
    """2 * MACs of every Conv2d / ConvTranspose2d / Linear, from hooks on the real shapes."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total += 2 * out.numel() * k
        elif isinstance(mod, nn.ConvTranspose2d):
            total += 2 * inp[0].numel() * mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            total += 2 * out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


def test_counts_match_hand_count():
    model = FoldConv((4, 2, 12, 10), 3)
    s = summary(model, batch_size=2, runs=2, warmup=1)
    assert isinstance(s, ModelSummary)
    assert s.params == (8 * 6 * 9 + 6) + 7 and s.trainable_params == 8 * 6 * 9 + 6
    assert s.flops == 2 * (6 * 12 * 10) * (8 * 9)  # per sample: 2 * outputs * (C_in * k * k)
    assert s.latency_ms is not None and s.latency_ms > 0 and s.batch_size == 2
    assert s.in_shape == (4, 2, 12, 10) and s.device == "cpu"
    assert "FoldConv" in str(s) and s.as_dict()["params"] == s.params


@pytest.mark.parametrize("name", ["unet", "resnet", "mixer"])
def test_student_flops_are_the_layer_sum(name):
    model = build_model(name, (3, 2, 20, 24), 4)
    x = torch.randn(1, 3, 2, 20, 24)
    expected = _conv_flops_by_hooks(model, x)
    assert count_flops(model, x) == expected
    assert summary(model, latency=False).flops == expected


def test_flops_per_sample_independent_of_batch():
    model = build_model("unet", (2, 1, 16, 16), 2, widths=(4, 8, 8, 8))
    assert count_flops(model, torch.randn(3, 2, 1, 16, 16)) == 3 * count_flops(model, torch.randn(1, 2, 1, 16, 16))
    assert summary(model, batch_size=3, latency=False).flops == count_flops(model, torch.randn(1, 2, 1, 16, 16))


def test_mode_restored_and_no_grad_state_leak():
    model = build_model("resnet", (2, 1, 16, 16), 2, widths=(4, 8), depths=(1, 1), strides=(1, 2)).train()
    summary(model, batch_size=2, runs=1, warmup=0)
    assert model.training
    model.eval()
    summary(model, runs=1, warmup=0)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_in_shape_and_argument_errors():
    model = build_model("unet", (2, 1, 16, 16), 2, widths=(4, 8, 8, 8))
    assert summary(model, latency=False).in_shape == (2, 1, 16, 16)
    assert summary(model, in_shape=(2, 1, 16, 16), latency=False).latency_ms is None
    bare = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
    with pytest.raises(ValueError, match="in_shape"):
        summary(bare)
    with pytest.raises(ValueError, match="in_shape"):
        summary(model, in_shape=(1, 16, 16))
    with pytest.raises(ValueError, match="batch_size"):
        summary(model, batch_size=0)


def test_measure_latency_is_median_of_runs():
    calls = []

    class Slow(nn.Module):
        def forward(self, x):
            calls.append(1)
            return x

    assert measure_latency(Slow(), torch.zeros(1), runs=3, warmup=2) >= 0
    assert len(calls) == 5


def test_count_parameters_shared_weights_counted_once():
    lin = nn.Linear(3, 3)
    model = nn.Sequential(lin, lin)
    assert count_parameters(model) == 12
