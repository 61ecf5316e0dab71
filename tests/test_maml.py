from dataclasses import replace

import torch
import torch.nn.functional as F
from toy_models import TOY

from spikeshot.models import ModelConfig, Network, Quantizer, adapt
from spikeshot.models.maml import InnerLoop, accuracy, masked_loss

TINY = dict(
    ways=2,
    input_hw=(4, 4),
    bins=3,
    burn_in=0,
    channels=(2,),
    kernel=3,
    zero_head=False,
    pool_kind="avg",
)


def _task(cfg, n, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = ((torch.rand(n, cfg.bins, 2, *cfg.input_hw, generator=g) < 0.4) * 1.0).to(dtype)
    y = torch.arange(n) % cfg.ways
    return x, y


def _params(cfg, scale=4.0, dtype=torch.float64):
    """Scaled initial weights, biases off zero so that no membrane sits exactly at threshold."""
    params = {k: (v * scale).to(dtype) for k, v in Network(cfg).init(3).items()}
    for k in params:
        if k.endswith("bias"):
            params[k] = params[k] - 0.05
    return params


def test_adapt_returns_new_params_and_leaves_input_untouched():
    cfg = ModelConfig(**TINY)
    net = Network(cfg)
    params = _params(cfg)
    before = {k: v.clone() for k, v in params.items()}
    x, y = _task(cfg, 4, 0)
    new = adapt(net.forward, params, x, y, steps=2, lr=0.5)
    assert all(torch.equal(params[k], before[k]) for k in params)
    assert any(not torch.equal(new[k], params[k]) for k in params)
    loss = lambda p: float(masked_loss(net.forward(p, x), y))  # noqa: E731
    assert loss(new) < loss(params)


def test_each_step_returns_the_support_loss_before_it():
    cfg = ModelConfig(**TINY)
    net = Network(cfg)
    params = _params(cfg)
    x, y = _task(cfg, 4, 0)
    loss = lambda p: float(masked_loss(net.forward(p, x), y))  # noqa: E731
    for create_graph in (False, True):
        loop = InnerLoop(net.forward, params, x, y, lr=0.5, create_graph=create_graph)
        losses = [loop.step() for _ in range(3)]
        one_step = adapt(net.forward, params, x, y, steps=1, lr=0.5)
        three_steps = adapt(net.forward, params, x, y, steps=3, lr=0.5)
        assert not losses[0].requires_grad
        assert abs(float(losses[0]) - loss(params)) < 1e-12
        assert abs(float(losses[1]) - loss(one_step)) < 1e-12
        assert all(torch.allclose(loop.params[k], three_steps[k], atol=1e-12) for k in params)


def test_vmap_over_tasks_matches_loop():
    cfg = ModelConfig(**TINY)
    net = Network(cfg)
    params = _params(cfg)
    tasks = [_task(cfg, 4, s) for s in range(3)]
    xs = torch.stack([t[0] for t in tasks])
    ys = torch.stack([t[1] for t in tasks])

    def one(x, y):
        return adapt(net.forward, params, x, y, steps=2, lr=0.3)

    batched = torch.func.vmap(one)(xs, ys)
    for i, (x, y) in enumerate(tasks):
        looped = one(x, y)
        for k in params:
            assert torch.allclose(batched[k][i], looped[k], atol=1e-12)


def test_second_order_meta_gradient_matches_finite_differences(monkeypatch):
    """The meta-gradient through ``adapt`` (second order) against central differences of the
    meta-loss. A Heaviside forward is piecewise constant, so its true derivative is zero and no
    finite difference can check a surrogate gradient through it; the spike's own first and second
    derivatives are checked in test_surrogate. Here the spike is swapped for its smooth twin (the
    surrogate's integral in the forward too), which makes the surrogate gradient the true one, and
    the whole second-order path (func.grad inside, autograd outside, traces, refractory scan,
    pooling, readout) must then agree with finite differences."""
    from spikeshot.models import lif
    from spikeshot.models.surrogate import fast_sigmoid

    monkeypatch.setattr(lif, "spike", lambda u, slope=10.0: fast_sigmoid(u, slope) + 0.5)
    cfg = ModelConfig(**TINY)
    net = Network(cfg)
    params = _params(cfg)
    (xs, ys), (xq, yq) = _task(cfg, 4, 1), _task(cfg, 6, 2)
    lr = 0.5

    def meta_loss(p, create_graph=True):
        fast = adapt(net.forward, p, xs, ys, steps=2, lr=lr, create_graph=create_graph)
        return masked_loss(net.forward(fast, xq), yq)

    theta = {k: v.clone().requires_grad_() for k, v in params.items()}
    grads = torch.autograd.grad(meta_loss(theta), list(theta.values()))
    fo_grads = torch.autograd.grad(meta_loss(theta, create_graph=False), list(theta.values()))
    gen = torch.Generator().manual_seed(5)
    for _ in range(3):
        direction = {
            k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()
        }
        eps = 1e-5
        plus = meta_loss({k: params[k] + eps * direction[k] for k in params})
        minus = meta_loss({k: params[k] - eps * direction[k] for k in params})
        numeric = float((plus - minus) / (2 * eps))
        analytic = float(sum((g * direction[k]).sum() for g, k in zip(grads, params, strict=True)))
        first_order = float(
            sum((g * direction[k]).sum() for g, k in zip(fo_grads, params, strict=True))
        )
        assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric)), (analytic, numeric)
        # the second-order term is there: first-order MAML misses it by far more than the tolerance
        assert abs(first_order - numeric) > 1e-4 * max(1.0, abs(numeric)), (first_order, numeric)


def test_names_restrict_adaptation_to_the_head():
    cfg = ModelConfig(**TINY)
    net = Network(cfg)
    params = _params(cfg)
    x, y = _task(cfg, 4, 0)
    new = adapt(net.forward, params, x, y, steps=1, lr=1.0, names=("out.weight", "out.bias"))
    assert torch.equal(new["conv0.weight"], params["conv0.weight"])
    assert not torch.equal(new["out.weight"], params["out.weight"])


def test_class_mask_leaves_unused_outputs_untouched():
    cfg = ModelConfig(**{**TINY, "ways": 3})
    net = Network(cfg)
    params = _params(cfg)
    x, y = _task(cfg, 4, 0)  # labels 0, 1 of 3 ways
    y = y % 2
    mask = torch.tensor([True, True, False])
    new = adapt(net.forward, params, x, y, steps=1, lr=1.0, class_mask=mask)
    assert torch.equal(new["out.weight"][2], params["out.weight"][2])
    assert torch.equal(new["out.bias"][2], params["out.bias"][2])
    assert not torch.equal(new["out.weight"][0], params["out.weight"][0])


def test_quantized_inner_loop_moves_spiking_weights_by_whole_grid_steps():
    """On a network that spikes, a quantized step moves many weights by one or more 1/128 steps
    of the paper's 8-bit grid, and equals theta' = Q(Q(theta) - lr * g) computed here by hand."""
    from spikeshot.models.init import firing_rates, lsuv_init

    cfg = replace(TOY, zero_head=False)
    net = Network(cfg)
    xs, ys, xq, _ = _prototype_task(torch.Generator().manual_seed(0), 3, 2, 4, cfg)
    params = lsuv_init(net, net.init(0), xq)
    assert min(firing_rates(net, params, xs)) > 0.01  # the hidden layer spikes

    def on_grid(x):  # the paper's 8-bit grid by hand: 7 fractional bits, clamped
        return torch.clamp(torch.round(x * 128), -128, 127) / 128

    start = {k: on_grid(v) for k, v in params.items()}
    leaves = {k: v.clone().requires_grad_() for k, v in start.items()}
    grads = torch.autograd.grad(F.cross_entropy(net.forward(leaves, xs), ys), list(leaves.values()))
    expected = {k: on_grid(start[k] - 2.0 * g) for k, g in zip(start, grads, strict=True)}

    new = adapt(net.forward, params, xs, ys, steps=1, lr=2.0, quantizer=Quantizer(bits=8))
    for k, v in new.items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0)
        levels = v * 128
        assert torch.equal(levels, levels.round()) and -128 <= levels.min() <= levels.max() <= 127
        moved = (levels - start[k] * 128).abs()
        assert torch.equal(moved, moved.round())  # whole grid steps only
    head_moved = (new["out.weight"] != start["out.weight"]).float().mean()
    conv_moved = (new["conv0.weight"] != start["conv0.weight"]).float().mean()
    assert head_moved > 0.2 and conv_moved > 0.01, (head_moved, conv_moved)


def _prototype_task(gen, ways, shots, queries, cfg):
    """Each class is a random sparse pattern in the ON channel, seen through dropout; the OFF
    channel carries as many events of pure distractor noise. Random features mix the two, so a
    network must learn to look at the ON channel: what meta-training is for."""
    n = shots + queries
    shape = (ways, n, cfg.bins, 1, *cfg.input_hw)
    protos = (torch.rand(ways, 1, 1, 1, *cfg.input_hw, generator=gen) < 0.3).float()
    on = protos * (torch.rand(shape, generator=gen) < 0.7)
    off = (torch.rand(shape, generator=gen) < 0.3).float() * 3
    x = torch.cat([off, on], dim=3)
    y = torch.arange(ways)[:, None].expand(ways, n)
    flat = lambda t: t.reshape(ways * t.shape[1], *t.shape[2:])  # noqa: E731
    return flat(x[:, :shots]), flat(y[:, :shots]), flat(x[:, shots:]), flat(y[:, shots:])


def test_second_order_maml_learns_a_toy_task():
    torch.manual_seed(0)
    cfg = TOY
    net = Network(cfg)
    gen = torch.Generator().manual_seed(0)
    from spikeshot.models.init import lsuv_init

    sample = _prototype_task(gen, 3, 1, 8, cfg)[2]
    params = {k: v.requires_grad_() for k, v in lsuv_init(net, net.init(0), sample).items()}
    opt = torch.optim.Adam(params.values(), lr=5e-3)

    def evaluate(seed, tasks=30):
        g = torch.Generator().manual_seed(seed)
        accs = []
        for _ in range(tasks):
            xs, ys, xq, yq = _prototype_task(g, 3, 1, 8, cfg)
            fast = adapt(net.forward, {k: v.detach() for k, v in params.items()}, xs, ys, lr=1.0)
            accs.append(accuracy(net.forward(fast, xq), yq))
        return sum(accs) / len(accs)

    before = evaluate(123)
    for _ in range(100):
        xs, ys, xq, yq = _prototype_task(gen, 3, 1, 8, cfg)
        fast = adapt(net.forward, params, xs, ys, lr=1.0, create_graph=True)
        opt.zero_grad()
        F.cross_entropy(net.forward(fast, xq), yq).backward()
        opt.step()
    after = evaluate(123)
    # chance is 1/3; measured here: about 0.44 before and 0.84 after
    assert after > 0.7, (before, after)
    assert after > before + 0.2, (before, after)
