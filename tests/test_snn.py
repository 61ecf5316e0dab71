import pytest
import torch
import torch.nn.functional as F

from spikeshot.models import ModelConfig, Network
from spikeshot.models.init import firing_rates, lsuv_init
from spikeshot.models.lif import TraceState, trace_filter, trace_final
from spikeshot.models.snn import (
    drive,
    features,
    features_stepwise,
    fold_pool,
    hidden_spikes,
    neuron,
    prepare_input,
)

TINY = dict(ways=3, input_hw=(8, 8), bins=6, burn_in=2, channels=(4, 6), kernel=3)


def _frames(batch, cfg, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(batch, cfg.bins, 2, *cfg.input_hw, generator=g) < 0.3) * 2.0).to(dtype)


def _params(cfg, scale=3.0):
    return {k: (v * scale).double() for k, v in Network(cfg).init(1).items()}


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("pool_kind", ["max", "avg"])
@pytest.mark.parametrize("last_layer", ["lif", "li"])
def test_batched_path_matches_stepwise_oracle(reset, pool_kind, last_layer):
    cfg = ModelConfig(
        **TINY, reset=reset, pool_kind=pool_kind, last_layer=last_layer, zero_head=False
    )
    params = {k: v.requires_grad_() for k, v in _params(cfg).items()}
    x = _frames(3, cfg)
    fast, slow = features(params, x, cfg), features_stepwise(params, x, cfg)
    assert fast.abs().sum() > 0, "the test network must spike"
    assert torch.allclose(fast, slow, atol=1e-12)
    conv = [v for k, v in params.items() if k.startswith("conv")]
    weights = torch.randn(fast.shape, dtype=fast.dtype, generator=torch.Generator().manual_seed(2))
    g_fast = torch.autograd.grad((fast * weights).sum(), conv)
    g_slow = torch.autograd.grad((slow * weights).sum(), conv)
    for a, b in zip(g_fast, g_slow, strict=False):
        assert a.abs().sum() > 0
        assert torch.allclose(a, b, atol=1e-12)


def test_the_readout_traces_take_their_own_constants():
    """With ``readout_alpha``/``readout_beta`` set, both paths filter the last layer's spikes
    with them (and only there): the hidden spikes are unchanged, the features are not."""
    cfg = ModelConfig(**TINY, zero_head=False)
    slow_readout = ModelConfig(**TINY, zero_head=False, readout_alpha=0.95, readout_beta=0.3)
    params, x = _params(cfg), _frames(3, cfg)
    fast, slow = features(params, x, slow_readout), features_stepwise(params, x, slow_readout)
    assert torch.allclose(fast, slow, atol=1e-12)
    assert not torch.allclose(fast, features(params, x, cfg), atol=1e-3)
    for a, b in zip(
        hidden_spikes(params, x, slow_readout), hidden_spikes(params, x, cfg), strict=True
    ):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="readout_alpha must be in"):
        ModelConfig(**TINY, readout_alpha=1.0)


def test_a_leaky_integrator_last_layer_passes_its_membrane_to_the_readout():
    """With ``last_layer = "li"`` the last hidden layer never fires: the features are the readout
    traces of its drive W P + b (the same drive a spiking layer thresholds), the layers before it
    spike as they did, and initialisation leaves its bias at zero."""
    lif = ModelConfig(**TINY, zero_head=False)
    li = ModelConfig(**TINY, zero_head=False, last_layer="li")
    params, x = _params(lif), _frames(3, lif)
    last = len(lif.channels) - 1
    v = hidden_drive(params, x, li, last).unflatten(0, (lif.bins, 3))  # burn-in steps included
    expected = trace_final(v, TraceState(v.new_zeros(()), v.new_zeros(())), neuron(li, None))
    out = features(params, x, li)
    assert torch.allclose(out, expected.p.flatten(1), atol=1e-12)
    assert (out < 0).any(), "a membrane, not spike traces"
    spikes_li, spikes_lif = hidden_spikes(params, x, li), hidden_spikes(params, x, lif)
    assert len(spikes_li) == last
    assert all(torch.equal(a, b) for a, b in zip(spikes_li, spikes_lif, strict=False))
    net = Network(li)
    init = lsuv_init(net, net.init(0), _frames(8, li, dtype=torch.float32))
    assert torch.equal(init[f"conv{last}.bias"], torch.zeros_like(init[f"conv{last}.bias"]))
    assert init["conv0.bias"].abs().sum() > 0
    with pytest.raises(ValueError, match="last_layer must be one of"):
        ModelConfig(**TINY, last_layer="relu")


@pytest.mark.parametrize("pool", [2, 3])
def test_folded_pooling_is_average_pooling_of_the_convolution(pool):
    g = torch.Generator().manual_seed(5)
    w = torch.randn(6, 4, 5, 5, generator=g, dtype=torch.float64)
    x = torch.randn(3, 4, 11, 14, generator=g, dtype=torch.float64)  # sizes off the pooling grid
    pooled = F.avg_pool2d(F.conv2d(x, w, padding=2), pool)
    folded = F.conv2d(x, fold_pool(w, pool), stride=pool, padding=2)
    assert folded.shape == pooled.shape
    assert torch.allclose(folded, pooled, atol=1e-12)


@pytest.mark.parametrize("pool_kind", ["max", "avg"])
def test_networks_side_by_side_give_each_networks_own_logits(pool_kind):
    """``forward_grouped`` of float and on-grid (8-bit) sessions, each on its own frames, equals
    every session's own forward bit for bit, burn-in included."""
    cfg = ModelConfig(**TINY, pool_kind=pool_kind, zero_head=False)
    net = Network(cfg)
    sessions = []
    for seed in range(5):
        params = {k: v * 3.0 for k, v in net.init(seed).items()}
        if seed % 2:  # on a power-of-two grid, as an 8-bit session's weights are
            params = {k: torch.round(v * 128) / 128 for k, v in params.items()}
        sessions.append((params, net.prepare(params)))
    exact = [kernel is not None for _, kernel in sessions[1][1]]
    assert exact == ([False, True] if pool_kind == "max" else [False, False])
    frames = torch.stack([_frames(2, cfg, seed, torch.float32) for seed in range(5)])
    grouped = net.forward_grouped(sessions, frames)
    assert grouped.shape == (5, 2, cfg.ways) and grouped.abs().sum() > 0
    with torch.no_grad():
        for (params, prepared), x, logits in zip(sessions, frames, grouped, strict=True):
            assert torch.equal(logits, net.forward(params, x, prepared))
    assert torch.equal(net.forward_grouped(sessions[:1], frames[:1]), grouped[:1])


def test_burn_in_steps_pass_no_gradient():
    cfg = ModelConfig(**TINY, zero_head=False)
    params = {k: v.requires_grad_() for k, v in _params(cfg).items()}
    x = _frames(2, cfg).requires_grad_()
    f = features(params, x, cfg)
    (gx,) = torch.autograd.grad(f.sum(), x)
    assert gx[:, : cfg.burn_in].abs().sum() == 0
    assert gx[:, cfg.burn_in :].abs().sum() > 0
    # ... but burn-in input still changes the state the gradient steps start from
    x2 = x.detach().clone()
    x2[:, 0] = 0
    assert not torch.allclose(features(params, x2, cfg), f)


def test_forward_shapes_and_input_check():
    cfg = ModelConfig(**TINY)
    net = Network(cfg)
    params = net.init(0)
    assert net.forward(params, _frames(4, cfg, dtype=torch.float32)).shape == (4, 3)
    with pytest.raises(ValueError, match=r"frames must be \[batch, 6, 2, 8, 8\]"):
        net.forward(params, torch.zeros(4, 5, 2, 8, 8))


def test_ann_baseline_same_architecture():
    snn_cfg = ModelConfig(**TINY)
    ann_cfg = ModelConfig(**{**TINY, "arch": "ann", "zero_head": False})
    snn_shapes, ann_shapes = Network(snn_cfg).shapes(), Network(ann_cfg).shapes()
    assert set(snn_shapes) == set(ann_shapes)
    assert ann_shapes["conv0.weight"][1] == 2 * ann_cfg.bins  # time bins stacked as channels
    net = Network(ann_cfg)
    params = {k: v.requires_grad_() for k, v in net.init(0).items()}
    out = net.forward(params, _frames(2, ann_cfg, dtype=torch.float32))
    assert out.shape == (2, 3)
    out.sum().backward()
    assert params["conv0.weight"].grad.abs().sum() > 0


def test_config_defaults_are_the_paper_and_bad_values_are_named():
    cfg = ModelConfig()
    assert cfg.channels == (32, 64, 128) and cfg.kernel == 5 and cfg.bins == 100
    assert (cfg.alpha, cfg.beta, cfg.alpha_rp, cfg.w_rp, cfg.input_gain) == (0.95, 0.9, 0.65, 1, 10)
    n = sum(v.numel() for v in Network(cfg).init(0).values())
    assert 250_000 < n < 275_000  # "about 263k parameters for Double NMNIST"
    with pytest.raises(ValueError, match="burn_in"):
        ModelConfig(bins=10, burn_in=10)
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(input_hw=(10, 32))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_lsuv_init_reaches_target_rate_deterministically():
    cfg = ModelConfig(**TINY)
    net = Network(cfg)
    x = _frames(8, cfg, dtype=torch.float32)
    a = lsuv_init(net, net.init(0), x, target_rate=0.15)
    b = lsuv_init(net, net.init(0), x, target_rate=0.15)
    assert all(torch.equal(a[k], b[k]) for k in a)
    for rate in firing_rates(net, a, x):
        assert abs(rate - 0.15) < 0.05


@pytest.mark.parametrize("pool_kind", ["max", "avg"])
def test_lsuv_init_bisects_as_with_whole_forward_passes(pool_kind):
    """The bisection on each layer's bias rescans spikes of a drive computed once; it must pick
    what bisecting with the whole network's firing rates at each candidate bias picks."""
    cfg = ModelConfig(**TINY, pool_kind=pool_kind)
    net = Network(cfg)
    x = _frames(8, cfg, dtype=torch.float32)
    params = net.init(0)
    for i in range(len(cfg.channels)):  # the bisection written out on whole forward passes
        w, b = f"conv{i}.weight", f"conv{i}.bias"
        params[b].zero_()
        params[w] *= 0.3 / float(hidden_drive(params, x, cfg, i).std())
        lo, hi = -0.9, 0.9
        for _ in range(14):
            mid = (lo + hi) / 2
            params[b].fill_(mid)
            lo, hi = (lo, mid) if firing_rates(net, params, x)[i] > 0.1 else (mid, hi)
        params[b].fill_((lo + hi) / 2)
    fast = lsuv_init(net, net.init(0), x)
    assert all(torch.equal(fast[k], params[k]) for k in params)


def hidden_drive(params, frames, cfg, i):
    """Layer ``i``'s drive on ``frames``: its input's traces through its convolution and pooling."""
    s = prepare_input(frames, cfg) if i == 0 else hidden_spikes(params, frames, cfg)[i - 1]
    zero = s.new_zeros(())
    p, _ = trace_filter(s, TraceState(zero, zero), neuron(cfg, i))
    return drive(params, i, p.flatten(0, 1), cfg)


# One neuron over four steps, worked out by hand (alpha = beta = alpha_rp = 0.5, gain 1, w_rp 1,
# soft reset, drive 2 P - 0.1, input spikes 1, 0, 1, 0):
#   t1: Q = .5            P = .25     U = .4              S = 1  R = -.5
#   t2: Q = .25           P = .25     U = .5 - .1 - .5    S = 0  R = -.25
#   t3: Q = .125 + .5     P = .4375   U = .875 - .1 - .25 S = 1  R = -.125 - .5
#   t4: Q = .3125         P = .375    U = .75 - .1 - .625 S = 1  R = -.3125 - .5
GOLDEN = {
    "q": [0.5, 0.25, 0.625, 0.3125],
    "p": [0.25, 0.25, 0.4375, 0.375],
    "u": [0.4, -0.1, 0.525, 0.025],
    "s": [1.0, 0.0, 1.0, 1.0],
    "r": [-0.5, -0.25, -0.625, -0.8125],
}


@pytest.mark.parametrize("grad", [False, True])
def test_one_neuron_matches_numbers_worked_out_by_hand(grad):
    from spikeshot.models.lif import (
        LIFState,
        Neuron,
        TraceState,
        lif_step,
        spike_scan,
        trace_filter,
    )

    x = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64).view(4, 1)
    zero = torch.zeros(1, dtype=torch.float64)
    n = Neuron(alpha=0.5, beta=0.5, gain=1.0, alpha_rp=0.5, w_rp=1.0, reset="soft", slope=10.0)
    # The plain per-step form.
    state, seen = LIFState(TraceState(zero, zero), zero), {k: [] for k in GOLDEN}
    for t in range(4):
        trace = state.trace
        u = 2 * (0.5 * trace.p + 0.5 * (0.5 * trace.q + 0.5 * x[t])) - 0.1 + state.r
        s, state = lif_step(x[t], state, lambda p: 2 * p - 0.1, n)
        for k, v in zip(GOLDEN, (state.trace.q, state.trace.p, u, s, state.r), strict=True):
            seen[k].append(float(v))
    for k, want in GOLDEN.items():
        assert seen[k] == pytest.approx(want, abs=1e-12), k
    # The fast path: the whole sequence's traces at once, then the refractory scan.
    xs = x.clone().requires_grad_(grad)
    p, last = trace_filter(xs, TraceState(zero, zero), n)
    assert p.detach().flatten().tolist() == pytest.approx(GOLDEN["p"], abs=1e-12)
    assert float(last.q.detach()) == pytest.approx(GOLDEN["q"][-1], abs=1e-12)
    s, r = spike_scan(2 * p - 0.1, zero, n)
    assert s.detach().flatten().tolist() == GOLDEN["s"]
    assert float(r.detach()) == pytest.approx(GOLDEN["r"][-1], abs=1e-12)
