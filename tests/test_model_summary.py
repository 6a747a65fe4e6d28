"""``sdkd.models.summary``: parameter and FLOP counts checked against hand counts, latency, modes."""

import pytest
import torch
from torch import nn

from sdkd.models import ModelSummary, build_model, summary
from sdkd.models.summary import count_flops, count_parameters, latency_stats, measure_latency


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


class _Clocked(nn.Module):
    """A model whose every call takes the next duration (ms) on a fake clock, so timing tests are exact."""

    def __init__(self, durations_ms):
        super().__init__()
        self.now, self.durations, self.calls = 0.0, list(durations_ms), 0

    def clock(self) -> float:
        return self.now

    def forward(self, x):
        self.now += self.durations[min(self.calls, len(self.durations) - 1)] / 1e3
        self.calls += 1
        return x


def test_latency_stats_skip_warmup_report_median_and_spread():
    m = _Clocked([50, 50, 50] + [1.0, 1.1, 1.2, 1.0, 1.1, 1.2, 1.0, 1.1, 1.2, 1.1])  # slow warm-up: not timed
    st = latency_stats(m, torch.zeros(1), runs=10, warmup=3, clock=m.clock)
    assert m.calls == 13 and st.runs == 10
    assert st.median_ms == pytest.approx(1.1) and st.p10_ms == pytest.approx(1.0) and st.p90_ms == pytest.approx(1.2)
    assert st.spread == pytest.approx(1.2) and st.reliable
    busy = _Clocked([1, 1, 30, 1, 1, 40, 1, 25])  # interrupted now and then, as under load
    assert not latency_stats(busy, torch.zeros(1), runs=8, warmup=0, clock=busy.clock).reliable


def test_latency_stats_times_short_models_for_min_seconds():
    m = _Clocked([1.0])
    st = latency_stats(m, torch.zeros(1), runs=5, warmup=0, min_seconds=0.03, clock=m.clock)
    assert st.runs == 30 and st.spread == pytest.approx(1.0)
    capped = _Clocked([1.0])
    assert latency_stats(capped, torch.zeros(1), runs=2, warmup=0, min_seconds=10, clock=capped.clock).runs == 40


def test_count_parameters_shared_weights_counted_once():
    lin = nn.Linear(3, 3)
    model = nn.Sequential(lin, lin)
    assert count_parameters(model) == 12
