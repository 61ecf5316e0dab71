"""The fast paths of the SNN against plain references: the trace filter, in-place scans, the fused
scan's first and second derivatives, the exact (int8) convolution of spikes and the conv-first
layer order it enables, and the closed-form readout adaptation."""

import pytest
import torch

from spikeshot.models import ModelConfig, Network, Quantizer, adapt, lif, snn, spike_conv
from spikeshot.models.fast_head import adapt_head
from spikeshot.models.lif import Neuron, TraceState, spike_scan, trace_filter, trace_final
from spikeshot.models.network import HEAD

TINY = dict(ways=3, input_hw=(8, 8), bins=6, burn_in=2, channels=(4, 6), kernel=3, zero_head=False)
F64 = torch.float64


def _frames(batch, cfg, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(batch, cfg.bins, 2, *cfg.input_hw, generator=g) < 0.3) * 2.0).to(dtype)


def _grid_params(cfg, dtype=F64):
    """Scaled initial weights put on the paper's 8-bit grid (step 1/128), biases off the grid."""
    net = Network(cfg)
    raw = {k: v * 3.0 for k, v in net.init(1).items()}
    q = Quantizer(8)
    params = {k: (q.fake(v, 1 / 128) if k.endswith("weight") else v - 0.05) for k, v in raw.items()}
    return {k: v.to(dtype) for k, v in params.items()}


def _filter_loop(x, q, p, alpha, beta, gain):
    out = []
    for xt in x.unbind(0):
        q = beta * q + (1 - beta) * gain * xt
        p = alpha * p + (1 - alpha) * q
        out.append(p)
    return torch.stack(out), q


@pytest.mark.parametrize("channels_last", [False, True])
def test_trace_filter_matches_the_recursion_with_and_without_gradient(channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(9, 2, 3, 4, 5, generator=g, dtype=F64).round()
    if channels_last:  # memory laid out [T, B, H, W, C], as the network keeps it
        x = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    q0, p0 = torch.rand(2, 2, 3, 4, 5, generator=g, dtype=F64)
    ref, ref_q = _filter_loop(x, q0, p0, 0.9, 0.7, 3.0)
    with torch.no_grad():
        p1, s1 = trace_filter(x, TraceState(q0, p0), Neuron(0.9, 0.7, 3.0))
    p2, s2 = trace_filter(x.requires_grad_(), TraceState(q0, p0), Neuron(0.9, 0.7, 3.0))
    s3 = trace_final(x, TraceState(q0, p0), Neuron(0.9, 0.7, 3.0))
    for p, s in ((p1, s1), (p2, s2), (None, s3)):
        if p is not None:
            assert torch.allclose(p, ref, atol=1e-13)
        assert torch.allclose(s.q, ref_q, atol=1e-13) and torch.allclose(s.p, ref[-1], atol=1e-13)
    assert p1.stride() == x.stride()  # the layout is kept


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_fused_scan_matches_the_plain_loop_to_second_order(reset):
    g = torch.Generator().manual_seed(1)
    v = (torch.randn(7, 3, 4, generator=g, dtype=F64) * 0.5).requires_grad_()
    r0 = (torch.randn(3, 4, generator=g, dtype=F64) * 0.2).requires_grad_()
    w, w2 = torch.randn(7, 3, 4, generator=g, dtype=F64), torch.randn(3, 4, generator=g, dtype=F64)
    direction = torch.randn(7, 3, 4, generator=g, dtype=F64)

    def derivatives(scan):
        s, r = scan()
        loss = ((s * w).sum(0) ** 2).sum() + (r * w2).sum() ** 2  # curved, so H(U) has a 2nd order
        gv, gr = torch.autograd.grad(loss, (v, r0), create_graph=True)
        hv = torch.autograd.grad((gv * direction).sum() + (gr**2).sum(), (v, r0))
        return s, r, gv, gr, *hv

    n = Neuron(alpha=0.8, beta=0.6, alpha_rp=0.65, w_rp=1.0, reset=reset, slope=10.0)
    fused = derivatives(lambda: spike_scan(v, r0, n))
    plain = derivatives(lambda: lif._scan_graph(v, r0.expand(3, 4), 0.65, 1.0, reset, 10.0))
    assert fused[0].sum() > 0 and fused[-1].abs().sum() > 0
    for a, b in zip(fused, plain, strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # the in-place values without graph
        s, r = spike_scan(v, r0, n)
    assert torch.equal(s, fused[0]) and torch.allclose(r, fused[1], atol=1e-15)


@pytest.mark.skipif(lif._scan_kernel() is None, reason="numba not installed")
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("keep", [False, True])
def test_numba_scan_equals_the_torch_scan_bit_for_bit(dtype, reset, keep):
    g = torch.Generator().manual_seed(6)
    v = (torch.randn(9, 4, 5, 3, generator=g) * 0.6).to(dtype)
    r0 = (torch.randn(4, 5, 3, generator=g) * 0.3).to(dtype)
    ours = lif._scan_values(v, r0, 0.65, 0.9, reset, keep)
    ref = lif._torch_scan(v, r0, 0.65, 0.9, reset, keep)
    assert ours[0].sum() > 0 and len(ours) == len(ref)
    for a, b in zip(ours, ref, strict=True):
        assert a.dtype == dtype and torch.equal(a, b)


@pytest.mark.skipif(lif._scan_kernel() is None, reason="numba not installed")
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("final_state", [False, True])
def test_numba_scan_backward_equals_the_torch_loop(monkeypatch, dtype, reset, final_state):
    """The first-order backward of the fused scan (no graph of it) in one numba loop: the torch
    loop's gradients of V and R0, to rounding (the loop's fused multiply-adds round once)."""
    g = torch.Generator().manual_seed(7)
    v = (torch.randn(9, 4, 5, 3, generator=g) * 0.6).to(dtype).requires_grad_()
    r0 = (torch.randn(4, 5, 3, generator=g) * 0.3).to(dtype).requires_grad_()
    w = torch.randn(9, 4, 5, 3, generator=g).to(dtype)
    n = Neuron(alpha=0.8, beta=0.6, alpha_rp=0.65, w_rp=0.9, reset=reset, slope=10.0)

    def gradients():
        s, r = spike_scan(v, r0, n)
        loss = (s * w).sum() + (r.square().sum() if final_state else 0)
        return torch.autograd.grad(loss, (v, r0))

    ours = gradients()
    monkeypatch.setattr(lif, "_stored_floats", lambda *tensors: False)
    ref = gradients()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for a, b in zip(ours, ref, strict=True):
        assert a.dtype == dtype and a.shape == b.shape and b.abs().sum() > 0
        assert torch.allclose(a, b, rtol=tol, atol=tol)


def test_burn_in_under_torch_func_grad_takes_the_torch_scan():
    """torch.func.grad wraps the tensors (no storage for a kernel): second-order MAML's burn-in."""
    cfg = ModelConfig(**TINY)
    params = _grid_params(cfg, torch.float32)
    x = _frames(2, cfg, dtype=torch.float32)
    net = Network(cfg)
    grads = torch.func.grad(lambda p: net.forward(p, x).square().sum())(params)
    assert grads["conv0.weight"].abs().sum() > 0


def test_grid_finds_fixed_point_weights_and_rejects_others():
    w = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(2)) * 0.2
    assert spike_conv.grid(w) is None
    for bits in (8, 4):
        wq = Quantizer(bits).fake(w, 2.0 ** -(bits - 1))
        levels, step = spike_conv.grid(wq)
        assert torch.equal(levels * step.view(-1, 1, 1, 1), wq)
        assert -128 <= levels.min() and levels.max() <= 127
    assert spike_conv.grid(torch.full((2, 1, 3, 3), 1000.5)) is None  # beyond int8's integers
    assert spike_conv.grid(torch.tensor([[[[-1.0, 0.5]]]]))[0].min() == -128  # int8's own range


@pytest.mark.skipif(not spike_conv.INT8, reason="oneDNN int8 convolution not available")
def test_int8_convolution_of_spikes_is_bit_exact():
    g = torch.Generator().manual_seed(3)
    w = Quantizer(8).fake(torch.randn(16, 8, 5, 5, generator=g) * 0.3, 1 / 128)
    x = (torch.rand(7, 8, 6, 10, generator=g) < 0.2).float()
    x = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    kernel = spike_conv.exact_kernel(w, 2)
    assert torch.equal(kernel(x), torch.nn.functional.conv2d(x, w, padding=2))


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("pool_kind", ["max", "avg"])
def test_conv_first_path_matches_the_oracle(monkeypatch, reset, pool_kind):
    """Grid weights switch the hidden layers of a max-pooling network to convolving first
    (average pooling folds into a float convolution instead); values, gradients and second
    derivatives must still be the per-step oracle's."""
    cfg = ModelConfig(**TINY, reset=reset, pool_kind=pool_kind)
    params = {k: v.requires_grad_() for k, v in _grid_params(cfg).items()}
    calls = []
    real = spike_conv.conv
    monkeypatch.setattr(spike_conv, "conv", lambda *a: calls.append(1) or real(*a))
    x = _frames(3, cfg)
    fast, slow = snn.features(params, x, cfg), snn.features_stepwise(params, x, cfg)
    # burn-in and gradient steps, layers 1..
    assert len(calls) == (2 * (len(cfg.channels) - 1) if pool_kind == "max" else 0)
    assert fast.abs().sum() > 0
    assert torch.allclose(fast, slow, atol=1e-12)
    conv = [v for k, v in params.items() if k.startswith("conv")]
    weights = torch.randn(fast.shape, dtype=F64, generator=torch.Generator().manual_seed(4))
    derivs = []
    for f in (fast, slow):
        grads = torch.autograd.grad(((f * weights).sum()) ** 2, conv, create_graph=True)
        second = torch.autograd.grad(sum((g**2).sum() for g in grads), conv)
        derivs.append([*grads, *second])
    for a, b in zip(*derivs, strict=True):
        assert a.abs().sum() > 0
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.skipif(not spike_conv.INT8, reason="oneDNN int8 convolution not available")
def test_int8_path_equals_the_float_conv_first_path_bit_for_bit(monkeypatch):
    cfg = ModelConfig(**TINY)
    params = {k: v.requires_grad_() for k, v in _grid_params(cfg, torch.float32).items()}
    x = _frames(3, cfg, dtype=torch.float32)
    runs = []
    for int8 in (True, False):
        monkeypatch.setattr(spike_conv, "INT8", int8)
        f = snn.features(params, x, cfg)
        runs.append([f, *torch.autograd.grad(f.sum(), list(params.values()), allow_unused=True)])
    for a, b in zip(*runs, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


def test_vmap_takes_the_plain_paths_and_matches_a_loop():
    cfg = ModelConfig(**TINY)
    params = _grid_params(cfg)
    xs = torch.stack([_frames(2, cfg, seed=s) for s in range(3)])
    batched = torch.func.vmap(lambda x: snn.features(params, x, cfg))(xs)
    for i in range(3):
        assert torch.allclose(batched[i], snn.features(params, xs[i], cfg), atol=1e-12)


@pytest.mark.parametrize("quantized", [False, True])
def test_closed_form_head_adaptation_matches_adapt_on_the_head(quantized):
    cfg = ModelConfig(**TINY)
    net = Network(cfg)
    params = _grid_params(cfg)
    x = _frames(4, cfg)
    y = torch.tensor([0, 1, 1, 0])
    mask = torch.tensor([True, True, False])
    lr = {"out.weight": torch.tensor(5.0, dtype=F64), "out.bias": torch.tensor(2.0, dtype=F64)}
    q = Quantizer(8) if quantized else None
    kw = dict(steps=3, lr=lr, quantizer=q, class_mask=mask)
    ours = adapt_head(net, params, x, y, **kw)
    ref = adapt(net.forward, params, x, y, names=HEAD, **kw)
    assert not torch.equal(ours["out.weight"], params["out.weight"])
    assert torch.equal(ours["out.weight"][2], params["out.weight"][2])  # the masked class
    for k in params:
        assert torch.allclose(ours[k], ref[k], atol=1e-12), k


def test_a_swapped_spike_function_takes_the_plain_paths(monkeypatch):
    """With a smooth spike (values off 0/1), neither the fused scan nor the exact spike
    convolution applies; the result is still the oracle's."""
    from spikeshot.models.surrogate import fast_sigmoid

    monkeypatch.setattr(lif, "spike", lambda u, slope=10.0: fast_sigmoid(u, slope) + 0.5)
    cfg = ModelConfig(**TINY)
    params = _grid_params(cfg, torch.float32)  # float32: where the int8 kernel would apply
    x = _frames(2, cfg, dtype=torch.float32)
    assert torch.allclose(
        snn.features(params, x, cfg), snn.features_stepwise(params, x, cfg), atol=1e-5
    )
