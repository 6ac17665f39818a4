"""SparseLinear / SparseConv2d: masks, init, optimiser safety, state dicts (every backend)."""

from __future__ import annotations

import copy
import io
import math
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from sparsetopo.errors import ConfigError
from sparsetopo.nn import SparseConv2d, SparseLinear, count_weights, sparse_layers

BACKENDS = ["masked", "sparse"]


def rand_mask(rows: int, cols: int, density: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(rows, cols, generator=g) < density


def dense_w(layer) -> torch.Tensor:
    return layer.dense_weight()


# ----------------------------------------------------------------------------- masks and shapes
def test_mask_forms_agree():
    m = rand_mask(20, 30, 0.3)
    layers = [SparseLinear(30, 20, form, backend="masked") for form in
              (m, m.numpy(), m.numpy().astype(np.float32), sp.csr_array(m.numpy()), sp.coo_matrix(m.numpy()))]
    for layer in layers:
        assert torch.equal(layer.mask_dense(), m)
        assert layer.nnz == int(m.sum())
        assert layer.density == pytest.approx(m.float().mean().item())


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_mask_shape_names_both_shapes(backend):
    with pytest.raises(ConfigError, match=r"\(30, 20\).*\(20, 30\)"):
        SparseLinear(30, 20, rand_mask(30, 20, 0.5), backend=backend)
    with pytest.raises(ConfigError, match=r"\(4, 3\).*\(3, 4\).*\(3, 4, 5, 5\)"):
        SparseConv2d(4, 3, 5, torch.ones(4, 3, dtype=torch.bool), backend=backend)


def test_bad_options_are_refused():
    m = rand_mask(4, 5, 0.5)
    with pytest.raises(ConfigError, match="backend='gpu'"):
        SparseLinear(5, 4, m, backend="gpu")
    with pytest.raises(ConfigError, match="init='xavier'"):
        SparseLinear(5, 4, m, init="xavier")
    with pytest.raises(ConfigError, match="in_features=0"):
        SparseLinear(0, 4, m)
    with pytest.raises(ConfigError, match="mask must be"):
        SparseLinear(5, 4, [[1, 0]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_pruned_weights_zero_after_construction(backend):
    m = rand_mask(50, 60, 0.1)
    layer = SparseLinear(60, 50, m, backend=backend)
    w = dense_w(layer)
    assert torch.all(w[~m] == 0)
    assert torch.all(w[m] != 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv_channel_mask_keeps_whole_kernels(backend):
    cm = rand_mask(8, 6, 0.4, seed=3)
    conv = SparseConv2d(6, 8, 3, cm, padding=1, backend=backend)
    full = conv.mask_dense()
    assert full.shape == (8, 6, 3, 3)
    assert torch.equal(full, cm[:, :, None, None].expand(8, 6, 3, 3))
    assert conv.nnz == int(cm.sum()) * 9
    assert torch.equal(conv.channel_mask(), cm)
    w = dense_w(conv)
    assert torch.all(w[~full] == 0)
    assert conv(torch.randn(2, 6, 7, 7)).shape == (2, 8, 7, 7)


def test_conv_full_mask_and_partial_channel():
    full = torch.rand(4, 3, 3, 3, generator=torch.Generator().manual_seed(1)) < 0.5
    conv = SparseConv2d(3, 4, 3, full, backend="masked")
    assert torch.equal(conv.mask_dense(), full)
    assert conv.channel_mask() is None


# ----------------------------------------------------------------------------- init
@pytest.mark.parametrize("backend", BACKENDS)
def test_init_bounds(backend):
    m = rand_mask(200, 400, 0.05, seed=2)
    m[0] = False
    torch.manual_seed(0)
    dense_init = SparseLinear(400, 200, m, init="dense", backend=backend)
    w = dense_w(dense_init)
    assert w.abs().max() <= 1 / math.sqrt(400)
    assert dense_init.bias.abs().max() <= 1 / math.sqrt(400)
    torch.manual_seed(0)
    sparse_init = SparseLinear(400, 200, m, init="sparse", backend=backend)
    ws = dense_w(sparse_init)
    fan_in = m.sum(1)
    for r in range(1, 200):
        assert ws[r].abs().max() <= 1 / math.sqrt(fan_in[r]) + 1e-7
    # variance follows the true fan-in: U(-b, b) has variance b^2 / 3 = 1 / (3 fan_in)
    scaled = (ws * fan_in.clamp(min=1).sqrt()[:, None])[m]
    assert scaled.var().item() == pytest.approx(1 / 3, rel=0.1)


def test_init_is_the_same_under_every_backend():
    m = rand_mask(30, 40, 0.3)
    torch.manual_seed(5)
    a = SparseLinear(40, 30, m, backend="masked")
    torch.manual_seed(5)
    b = SparseLinear(40, 30, m, backend="sparse")
    assert torch.equal(a.dense_weight(), b.dense_weight())
    assert torch.equal(a.bias, b.bias)


# ----------------------------------------------------------------------------- optimisers
OPTIMISERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "sgd_nesterov_wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adam_wd_amsgrad": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5, weight_decay=0.01),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.1),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opt_name", sorted(OPTIMISERS))
def test_pruned_weights_stay_zero_under_optimisers(backend, opt_name):
    torch.manual_seed(0)
    m1 = rand_mask(16, 12, 0.3, seed=1)
    cm = rand_mask(6, 3, 0.5, seed=2)
    model = nn.Sequential(SparseConv2d(3, 6, 3, cm, padding=1, backend=backend), nn.ReLU(), nn.Flatten(),
                          nn.Linear(6 * 4 * 4, 12), nn.ReLU(), SparseLinear(12, 16, m1, backend=backend))
    opt = OPTIMISERS[opt_name](model.parameters())
    x = torch.randn(8, 3, 4, 4)
    before = model[5].dense_weight().clone()
    for _ in range(5):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        assert torch.all(model[0].dense_weight()[~model[0].mask_dense()] == 0)
        assert torch.all(model[5].dense_weight()[~m1] == 0)
    assert not torch.equal(before, model[5].dense_weight())  # it did train
    if backend == "masked":  # the stored dense weight itself is zero there, not only the product
        assert torch.all(model[5].weight[~m1] == 0)
        assert torch.all(model[5].weight.grad[~m1] == 0)


# ----------------------------------------------------------------------------- set_mask
def test_set_mask_zeroes_weights_and_optimiser_state():
    torch.manual_seed(0)
    m = rand_mask(10, 10, 0.8)
    layer = SparseLinear(10, 10, m, backend="masked")
    opt = torch.optim.Adam(layer.parameters(), lr=0.01)
    x = torch.randn(4, 10)
    for _ in range(3):
        opt.zero_grad()
        layer(x).sum().backward()
        opt.step()
    st = opt.state[layer.weight]
    assert st["exp_avg"][m].abs().sum() > 0
    new = m & rand_mask(10, 10, 0.5, seed=9)
    layer.set_mask(new, optimizer=opt)
    assert torch.equal(layer.mask_dense(), new)
    assert torch.all(layer.weight[~new] == 0)
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.all(st[key][~new] == 0)
    for _ in range(3):
        opt.zero_grad()
        layer(x).sum().backward()
        opt.step()
        assert torch.all(layer.weight[~new] == 0)


def test_set_mask_sgd_momentum_and_checks():
    torch.manual_seed(0)
    m = torch.ones(5, 4, dtype=torch.bool)
    layer = SparseLinear(4, 5, m, backend="masked")
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    layer(torch.randn(3, 4)).sum().backward()
    opt.step()
    new = m.clone()
    new[0] = False
    layer.set_mask(new, opt)
    assert torch.all(opt.state[layer.weight]["momentum_buffer"][0] == 0)
    with pytest.raises(ConfigError, match=r"\(4, 5\)"):
        layer.set_mask(torch.ones(4, 5, dtype=torch.bool))


@pytest.mark.parametrize("opt_name", ["adam", "sgd_momentum"])
def test_set_mask_under_sparse_backend_matches_masked(opt_name):
    m = rand_mask(12, 9, 0.6, seed=1)
    new = (m & rand_mask(12, 9, 0.7, seed=2)) | rand_mask(12, 9, 0.1, seed=3)  # prune some, grow a few
    x = torch.randn(5, 9, dtype=torch.float64)
    results = []
    for backend in BACKENDS:
        torch.manual_seed(0)
        layer = SparseLinear(9, 12, m, backend=backend).double()
        opt = OPTIMISERS[opt_name](layer.parameters())
        for step in range(6):
            if step == 3:
                layer.set_mask(new, optimizer=opt)
            opt.zero_grad()
            layer(x).pow(2).sum().backward()
            opt.step()
        assert torch.equal(layer.mask_dense(), new)
        assert layer.nnz == int(new.sum())
        results.append(layer.dense_weight())
    assert torch.all(results[1][~new] == 0)
    torch.testing.assert_close(results[1], results[0], rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------- persistence
def _model(backend: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(SparseConv2d(2, 4, 3, rand_mask(4, 2, 0.5, seed=4), backend=backend), nn.Flatten(),
                         SparseLinear(4 * 3 * 3, 7, rand_mask(7, 36, 0.2, seed=5), backend=backend))


@pytest.mark.parametrize("src", BACKENDS)
@pytest.mark.parametrize("dst", BACKENDS)
def test_state_dict_round_trip_across_backends(src, dst):
    a = _model(src, seed=0)
    b = _model(dst, seed=1)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf))
    x = torch.randn(3, 2, 5, 5)
    for la, lb in zip(sparse_layers(a), sparse_layers(b)):
        assert torch.equal(la[1].dense_weight(), lb[1].dense_weight())
        assert torch.equal(la[1].bias, lb[1].bias)
    torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-6)
    back = _model(src, seed=2)
    back.load_state_dict(b.state_dict())
    for la, lb in zip(sparse_layers(a), sparse_layers(back)):
        assert torch.equal(la[1].dense_weight(), lb[1].dense_weight())


@pytest.mark.parametrize("src", BACKENDS)
@pytest.mark.parametrize("dst", BACKENDS)
def test_loading_a_different_mask_is_refused(src, dst):
    a = SparseLinear(10, 6, rand_mask(6, 10, 0.5, seed=1), backend=src)
    b = SparseLinear(10, 6, rand_mask(6, 10, 0.5, seed=2), backend=dst)
    with pytest.raises(ConfigError, match="mask differs"):
        b.load_state_dict(a.state_dict())
    c = SparseLinear(11, 6, rand_mask(6, 11, 0.5, seed=2), backend=dst)
    with pytest.raises(ConfigError, match=r"\(6, 10\).*\(6, 11\)"):
        c.load_state_dict(a.state_dict())


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_state_dict_loads_keeping_the_mask(backend):
    dense = nn.Linear(10, 6)
    m = rand_mask(6, 10, 0.5)
    layer = SparseLinear(10, 6, m, backend=backend)
    missing, unexpected = layer.load_state_dict(dense.state_dict(), strict=False)
    assert not unexpected
    with torch.no_grad():
        assert torch.equal(layer.dense_weight(), dense.weight * m)


@pytest.mark.parametrize("backend", BACKENDS)
def test_deepcopy_pickle_and_to(backend):
    model = _model(backend)
    x = torch.randn(2, 2, 5, 5)
    y = model(x)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        torch.testing.assert_close(clone(x), y)
        for (_, a), (_, b) in zip(sparse_layers(model), sparse_layers(clone)):
            assert torch.equal(a.mask_dense(), b.mask_dense())
    dbl = copy.deepcopy(model).to(torch.float64)
    torch.testing.assert_close(dbl(x.double()), y.double(), rtol=1e-5, atol=1e-6)
    buffers = [k.split(".")[-1] for k, _ in model.named_buffers()]
    assert ("mask" if backend == "masked" else "weight_indices") in buffers


# ----------------------------------------------------------------------------- helpers
def test_count_weights_and_sparse_layers():
    model = nn.Sequential(nn.Conv2d(1, 6, 5), SparseConv2d(6, 16, 5, rand_mask(16, 6, 0.5), backend="masked"),
                          nn.Flatten(), SparseLinear(400, 120, rand_mask(120, 400, 0.1), backend="sparse"),
                          nn.Linear(120, 10))
    names = [n for n, _ in sparse_layers(model)]
    assert names == ["1", "3"]
    total, nonzero = count_weights(model)
    assert total == 6 * 25 + 16 * 6 * 25 + 400 * 120 + 120 * 10
    assert nonzero == 6 * 25 + model[1].nnz + model[3].nnz + 120 * 10
