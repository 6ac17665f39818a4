"""The ``sparse`` backend computes exactly what ``masked`` computes, without dense weight-sized memory."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from sparsetopo.nn import SparseConv2d, SparseLinear, count_weights


def make_mask(rng: np.random.Generator, rows: int, cols: int, kind: str) -> np.ndarray:
    if kind == "dense":
        return np.ones((rows, cols), dtype=bool)
    if kind == "empty":
        return np.zeros((rows, cols), dtype=bool)
    density = {"half": 0.5, "tenth": 0.1, "sparse": 0.01}.get(kind, 0.3)
    m = rng.random((rows, cols)) < density
    if kind == "holes":  # empty rows and columns
        m[rng.random(rows) < 0.3] = False
        m[:, rng.random(cols) < 0.3] = False
    return m


def pair(mask, cls_args: tuple, conv: bool, dtype: torch.dtype, seed: int, **kw):
    layers = []
    for backend in ("masked", "sparse"):
        torch.manual_seed(seed)
        cls = SparseConv2d if conv else SparseLinear
        layers.append(cls(*cls_args[:2], *cls_args[2:], mask, backend=backend, **kw).to(dtype))
    return layers


def grads(layer, x, gy):
    x = x.clone().requires_grad_(True)
    y = layer(x)
    param = layer.weight if layer.backend == "masked" else layer.weight_values
    gx, gw, gb = torch.autograd.grad(y, (x, param, layer.bias), gy)
    if layer.backend == "masked":
        m2 = layer.mask.reshape(layer._rows, layer._cols)
        gw2 = gw.reshape(layer._rows, layer._cols)
        assert torch.all(gw2[~m2] == 0)  # pruned connections get exactly zero gradient
        gw = gw2[m2]
    return y, gx, gw, gb


LINEAR_CASES = [
    # (in, out, batch, mask kind)
    (1, 1, 1, "dense"), (7, 5, 1, "random"), (30, 20, 3, "holes"), (64, 33, 512, "tenth"),
    (300, 100, 100, "sparse"), (50, 40, 17, "empty"), (129, 65, 2, "dense"), (784, 300, 64, "tenth"),
    (200, 300, 256, "half"), (17, 1000, 5, "holes"), (1000, 3, 9, "sparse"), (5, 7, 130, "random"),
    (9, 70, 2100, "random"),  # a batch above one pass of the kernels (tiled)
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", LINEAR_CASES, ids=lambda c: "x".join(map(str, c)))
def test_linear_matches_masked(case, dtype):
    n_in, n_out, batch, kind = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    mask = make_mask(rng, n_out, n_in, kind)
    a, b = pair(mask, (n_in, n_out), False, dtype, seed=1)
    x = torch.from_numpy(rng.standard_normal((batch, n_in))).to(dtype)
    gy = torch.from_numpy(rng.standard_normal((batch, n_out))).to(dtype)
    tol = dict(rtol=1e-5, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for ra, rb in zip(grads(a, x, gy), grads(b, x, gy)):
        torch.testing.assert_close(rb, ra, **tol)


CONV_CASES = [
    # (in_ch, out_ch, kernel, stride, padding, batch, hw, mask kind, channel mask?)
    (6, 16, 5, 1, 0, 4, 14, "half", True), (3, 8, 3, 2, 1, 1, 9, "holes", True),
    (4, 5, 3, 1, 1, 3, 6, "random", False), (1, 6, 5, 1, 2, 2, 8, "dense", True),
    (8, 8, 1, 1, 0, 5, 4, "tenth", True), (5, 4, (3, 2), (2, 1), (1, 0), 2, 7, "empty", True),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(map(str, c)))
def test_conv_matches_masked(case):
    cin, cout, k, stride, pad, batch, hw, kind, channel = case
    rng = np.random.default_rng(7)
    kh, kw = (k, k) if isinstance(k, int) else k
    mask = make_mask(rng, cout, cin, kind) if channel else make_mask(rng, cout, cin * kh * kw, kind).reshape(
        cout, cin, kh, kw)
    a, b = pair(mask, (cin, cout, k), True, torch.float64, seed=2, stride=stride, padding=pad)
    x = torch.from_numpy(rng.standard_normal((batch, cin, hw, hw)))
    ya = a(x)
    gy = torch.from_numpy(rng.standard_normal(tuple(ya.shape)))
    for ra, rb in zip(grads(a, x, gy), grads(b, x, gy)):
        torch.testing.assert_close(rb, ra, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("stride,padding,dilation", [(1, 2, 2), (2, (1, 2), (2, 1)), (3, 0, 3)])
def test_conv_dilation_and_stride_match_masked(stride, padding, dilation):
    """The patch-gradient accumulation (the backward of the patch matrix) honours stride and dilation."""
    rng = np.random.default_rng(11)
    mask = make_mask(rng, 6, 4, "random") | np.eye(6, 4, dtype=bool)
    a, b = pair(mask, (4, 6, 3), True, torch.float64, seed=2, stride=stride, padding=padding,
                dilation=dilation)
    x = torch.from_numpy(rng.standard_normal((3, 4, 11, 10)))
    gy = torch.from_numpy(rng.standard_normal(tuple(a(x).shape)))
    for ra, rb in zip(grads(a, x, gy), grads(b, x, gy)):
        torch.testing.assert_close(rb, ra, rtol=1e-5, atol=1e-10)


def test_conv_unbatched_input():
    mask = np.ones((4, 3), dtype=bool)
    a, b = pair(mask, (3, 4, 3), True, torch.float32, seed=0, padding=1)
    x = torch.randn(3, 5, 5)
    torch.testing.assert_close(b(x), a(x), rtol=1e-4, atol=1e-5)


def test_conv_without_autograd_runs_in_chunks_with_identical_results(monkeypatch):
    """Evaluation of a large sparse convolution runs in batch chunks (less memory) and gives the same bits."""
    from sparsetopo.nn import functional as sf
    mask = make_mask(np.random.default_rng(3), 12, 5, "tenth") | np.eye(12, 5, dtype=bool)
    a, b = pair(mask, (5, 12, 3), True, torch.float32, seed=0, padding=1)
    x = torch.randn(7, 5, 6, 6)
    whole = b(x).detach()  # autograd on: one pass over the whole batch
    monkeypatch.setattr(sf, "NO_GRAD_CHUNK_ELEMENTS", 12 * 36 * 2)  # two samples per chunk
    calls = []
    original = sf.Im2ColT.apply
    monkeypatch.setattr(sf.Im2ColT, "apply", lambda *args: calls.append(args[0].shape[0]) or original(*args))
    with torch.no_grad():
        chunked = b(x)
    assert calls == [2, 2, 2, 1]
    assert torch.equal(chunked, whole)
    torch.testing.assert_close(chunked, a(x).detach(), rtol=1e-4, atol=1e-5)


POOL_CASES = [
    # (in_ch, out_ch, kernel, stride, padding, batch, hw, pool, density): LeNet-5's conv2 shape, odd sizes
    # whose last row and column fall outside the windows, 3x3 windows, a strided conv, a batch of one
    (20, 500, 5, 1, 0, 7, 12, 2, 0.1), (3, 64, 3, 1, 1, 5, 11, 3, 0.3), (4, 300, 5, 1, 0, 33, 14, 2, 0.05),
    (2, 70, 3, 2, 1, 3, 9, 2, 0.5), (6, 9, 3, 1, 0, 1, 7, 2, 1.0),
]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "-".join(map(str, c)))
def test_conv_max_pool_is_the_pooled_convolution_bit_for_bit(case, relu):
    """``conv_max_pool2d`` on the sparse backend gives exactly the values and input gradients of the
    convolution followed by ``torch.max_pool2d`` (and ``torch.relu``), ties included (zero input regions make
    every window there equal to the bias), for a channels-last input and a transposed output gradient (what
    a sparse fc1 sends back); the weight and bias gradients to float rounding (their sums run in window
    order); and what masked computes. The result does not depend on the thread count."""
    from sparsetopo.nn import conv_max_pool2d
    cin, cout, k, stride, pad, batch, hw, pool, density = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    mask = rng.random((cout, cin)) < density
    masked, sparse = pair(mask, (cin, cout, k), True, torch.float32, seed=3, stride=stride, padding=pad)
    x = torch.from_numpy(rng.standard_normal((batch, cin, hw, hw)).astype(np.float32))
    x[:, :, : hw // 3] = 0
    x = x.contiguous(memory_format=torch.channels_last)

    def run(layer, fused: bool):
        xi = x.clone().requires_grad_(True)
        if fused:
            y = conv_max_pool2d(layer, xi, pool, relu=relu)
        else:
            y = torch.max_pool2d(layer(xi), pool)
            y = torch.relu(y) if relu else y
        flat = y.flatten(1)
        gy = torch.from_numpy(rng.standard_normal(flat.shape[::-1]).astype(np.float32)).t().reshape(y.shape)
        param = layer.weight if layer.backend == "masked" else layer.weight_values
        return (y, *torch.autograd.grad(y, (xi, param, layer.bias), gy))

    state = rng.bit_generator.state
    fused = run(sparse, True)
    rng.bit_generator.state = state
    plain = run(sparse, False)
    rng.bit_generator.state = state
    reference = run(masked, True)  # masked: the plain two-step computation
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        rng.bit_generator.state = state
        one_thread = run(sparse, True)
    finally:
        torch.set_num_threads(threads)
    assert fused[0].shape == (batch, cout, plain[0].shape[2], plain[0].shape[3])
    assert torch.equal(fused[0], plain[0]) and torch.equal(fused[1], plain[1])
    torch.testing.assert_close(fused[2], plain[2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused[3], plain[3], rtol=1e-5, atol=1e-5)
    for got, want in zip(fused, one_thread):
        assert torch.equal(got, want)
    for got, want in zip((fused[0], fused[1], fused[3]), (reference[0], reference[1], reference[3])):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_pooled_conv_kernel_gives_the_same_bits_whatever_its_tile(monkeypatch):
    """``spmm_pool``'s tile (sized for the cache by ``pool_tile``) changes only the speed: 16-column tiles, the
    default (128 for LeNet-5's conv2: 500 patch rows, 4 window positions) and one tile give the same bits."""
    import scipy.sparse as sp

    from sparsetopo.nn import kernels

    assert kernels.pool_tile(500, 4, 1600, 4, 50.0) == 128 and kernels.pool_tile(500, 4, 100, 4, 50.0) == 100
    assert kernels.pool_tile(500, 4, 1600, 4, 5.0) == 400  # x100: 5 connections a row, wider passes
    rng = np.random.default_rng(7)
    w = sp.random(60, 500, density=0.1, random_state=1, format="csr", dtype=np.float32)
    xt = rng.standard_normal((500, 4 * 300)).astype(np.float32)
    bias = rng.standard_normal(60).astype(np.float32)
    results = []
    for budget in (16 * 500 * 4 * 4, kernels.POOL_TILE_BYTES, 1 << 40):
        monkeypatch.setattr(kernels, "POOL_TILE_BYTES", budget)
        results.append(kernels.spmm_pool(w.indptr, w.indices, w.data, xt, bias, 4, relu=True))
    for y, am in results[1:]:
        assert np.array_equal(y, results[0][0]) and np.array_equal(am, results[0][1])
    full = (w @ xt + bias[:, None]).reshape(60, 4, 300)
    np.testing.assert_allclose(results[0][0], np.maximum(full.max(1), 0), rtol=1e-5, atol=1e-5)


def test_conv_max_pool_propagates_nan_like_torch():
    from sparsetopo.nn import conv_max_pool2d
    mask = np.ones((4, 2), dtype=bool)
    _, sparse = pair(mask, (2, 4, 3), True, torch.float32, seed=0)
    x = torch.randn(2, 2, 8, 8)
    x[0, 0, 2, 2] = float("nan")
    with torch.no_grad():
        fused = conv_max_pool2d(sparse, x, 2, relu=True)
        plain = torch.relu(torch.max_pool2d(sparse(x), 2))
    assert torch.isnan(fused).any()
    assert torch.equal(torch.isnan(fused), torch.isnan(plain))
    assert torch.equal(fused.nan_to_num(7.0), plain.nan_to_num(7.0))


def test_conv_max_pool_without_autograd_runs_in_chunks_with_identical_results(monkeypatch):
    from sparsetopo.nn import conv_max_pool2d
    from sparsetopo.nn import functional as sf
    mask = make_mask(np.random.default_rng(5), 12, 5, "tenth") | np.eye(12, 5, dtype=bool)
    _, sparse = pair(mask, (5, 12, 3), True, torch.float32, seed=0, padding=1)
    x = torch.randn(7, 5, 6, 6)
    whole = conv_max_pool2d(sparse, x, 2, relu=True).detach()
    monkeypatch.setattr(sf, "NO_GRAD_CHUNK_ELEMENTS", 5 * 9 * 36 * 2)  # two samples' patches per chunk
    calls = []
    original = sf.WindowPatches.apply
    monkeypatch.setattr(sf.WindowPatches, "apply", lambda *args: calls.append(args[0].shape[0]) or original(*args))
    with torch.no_grad():
        chunked = conv_max_pool2d(sparse, x, 2, relu=True)
    assert calls == [2, 2, 2, 1]
    assert torch.equal(chunked, whole)


def test_conv_max_pool_output_feeds_a_sparse_layer_without_a_copy():
    """The pooled output, flattened, is the transpose of a contiguous (features, batch) matrix: what the
    sparse linear kernels read, so LeNet-5's fc1 takes it without transposing its largest input."""
    from sparsetopo.nn import conv_max_pool2d
    _, sparse = pair(np.ones((6, 3), dtype=bool), (3, 6, 3), True, torch.float32, seed=0)
    y = conv_max_pool2d(sparse, torch.randn(5, 3, 10, 10), 2, relu=True)
    flat = torch.flatten(y, 1)
    assert flat.shape == (5, 6 * 4 * 4)
    assert flat.t().is_contiguous() and flat.data_ptr() == y.data_ptr()


def test_conv_max_pool_refuses_a_bad_window():
    from sparsetopo.errors import ConfigError
    from sparsetopo.nn import conv_max_pool2d
    _, sparse = pair(np.ones((2, 2), dtype=bool), (2, 2, 3), True, torch.float32, seed=0)
    for bad in (0, -2, 2.0, True):
        with pytest.raises(ConfigError, match="kernel_size"):
            conv_max_pool2d(sparse, torch.randn(1, 2, 8, 8), bad)


def test_linear_leading_dims_and_non_contiguous_input():
    mask = make_mask(np.random.default_rng(0), 6, 8, "random")
    a, b = pair(mask, (8, 6), False, torch.float32, seed=0)
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(b(x), a(x), rtol=1e-4, atol=1e-5)
    xt = torch.randn(8, 5).t()
    torch.testing.assert_close(b(xt), a(xt), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_training_gives_the_same_weights_under_both_backends(opt):
    rng = np.random.default_rng(3)
    m1 = make_mask(rng, 40, 30, "tenth")
    m2 = make_mask(rng, 10, 40, "random")
    cm = make_mask(rng, 6, 3, "half")
    models = []
    for backend in ("masked", "sparse"):
        torch.manual_seed(0)
        models.append(nn.Sequential(
            SparseConv2d(3, 6, 3, cm, padding=1, backend=backend), nn.ReLU(), nn.Flatten(),
            nn.Linear(6 * 25, 30), nn.Tanh(), SparseLinear(30, 40, m1, backend=backend), nn.ReLU(),
            SparseLinear(40, 10, m2, backend=backend)).double())
    x = torch.from_numpy(rng.standard_normal((16, 3, 5, 5)))
    t = torch.from_numpy(rng.integers(0, 10, 16))
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3) if opt == "sgd"
            else torch.optim.Adam(m.parameters(), lr=1e-2) for m in models]
    for _ in range(5):
        for m, o in zip(models, opts):
            o.zero_grad()
            nn.functional.cross_entropy(m(x), t).backward()
            o.step()
    for la, lb in zip(models[0], models[1]):
        if hasattr(la, "dense_weight"):
            torch.testing.assert_close(lb.dense_weight(), la.dense_weight(), rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(models[1](x), models[0](x), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("threads", [1, 2])
def test_activation_transposes_are_exact(threads):
    """Batch-major activations are transposed to feature-major (split over threads when large) exactly."""
    from sparsetopo.nn import kernels
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rng = np.random.default_rng(0)
        for shape in [(0, 5), (5, 0), (1, 1), (3, 7), (256, 3000), (3000, 256), (97, 5003)]:
            a = rng.standard_normal(shape).astype(np.float32)
            t = kernels.transpose(a)
            assert t.flags.c_contiguous and t.shape == shape[::-1]
            assert np.array_equal(t, a.T)
    finally:
        torch.set_num_threads(prev)


def test_sparse_backend_is_deterministic():
    mask = make_mask(np.random.default_rng(1), 300, 500, "tenth")
    outs = []
    for threads in (1, 2, 1):
        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            torch.manual_seed(0)
            layer = SparseLinear(500, 300, mask, backend="sparse")
            x = torch.randn(1024, 500, requires_grad=True)  # enough work to use two threads
            y = layer(x)
            y.pow(2).sum().backward()
            outs.append((y.detach(), x.grad, layer.weight_values.grad))
        finally:
            torch.set_num_threads(prev)
    for other in outs[1:]:
        for u, v in zip(outs[0], other):
            assert torch.equal(u, v)


def test_no_dense_weight_sized_allocation():
    # 1e6 x 1e5 dense-equivalent weights (400 GB in float32): anything weight-sized would fail here.
    rows, cols = 1_000_000, 100_000
    rng = np.random.default_rng(0)
    nnz = 2_000
    r = rng.integers(0, rows, nnz)
    c = rng.integers(0, cols, nnz)
    mask = sp.coo_array((np.ones(nnz, dtype=bool), (r, c)), shape=(rows, cols))
    layer = SparseLinear(cols, rows, mask, backend="sparse", bias=False)
    assert layer.nnz == len(set(zip(r.tolist(), c.tolist())))
    assert layer.density == pytest.approx(layer.nnz / (rows * cols))
    x = torch.zeros(2, cols)
    x[:, c[:10]] = 1.0
    y = layer(x)
    assert y.shape == (2, rows)
    y.sum().backward()
    assert layer.weight_values.grad.shape == (layer.nnz,)
    sd = layer.state_dict()
    assert sum(t.numel() for t in sd.values()) < 10 * nnz + rows + 10
    other = SparseLinear(cols, rows, mask, backend="sparse", bias=False)
    other.load_state_dict(sd)
    assert torch.equal(other.weight_values, layer.weight_values)
    assert count_weights(nn.Sequential(layer)) == (rows * cols, layer.nnz)


RADIX_CASES = [
    # (systems, kron, trim, layer, batch)
    ([(2, 2)], (320, 160, 1), 16, 0, 33),    # 1264 x 640: trimmed inputs, dense 160 x 320 blocks
    ([(2, 5)], (100, 100, 1), 0, 0, 4),       # 1000 x 1000, radix 2 of N' = 10: 100 x 100 blocks
    ([(4, 4)], (32, 32, 32), 0, 1, 1),        # radix 4 at place value 4: 128 x 128 blocks
]


@pytest.mark.parametrize("case", RADIX_CASES, ids=lambda c: str(c[:3]))
def test_radix_layers_use_the_block_kernel_and_match_masked(case):
    from sparsetopo.topology import radix_net
    systems, kron, trim, index, batch = case
    mask = radix_net(systems, kron, trim_inputs=trim).layers[index].T.tocsr()
    n_out, n_in = mask.shape
    a, b = pair(mask, (n_in, n_out), False, torch.float64, seed=4)
    assert b.kernel_name().startswith("block")
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((batch, n_in)))
    gy = torch.from_numpy(rng.standard_normal((batch, n_out)))
    for ra, rb in zip(grads(a, x, gy), grads(b, x, gy)):
        torch.testing.assert_close(rb, ra, rtol=1e-5, atol=1e-10)
    c = SparseLinear(n_in, n_out, mask, backend="sparse")
    c.block_kernel = False
    assert c.kernel_name() == "csr"


def test_block_kernel_on_a_radix_channel_mask():
    from sparsetopo.topology import radix_net
    cm = radix_net([(2, 2)], (32, 64, 1)).layers[0].T.tocsr()  # 256 out x 128 in channels
    a, b = pair(cm, (128, 256, 3), True, torch.float64, seed=5, padding=1)
    assert b.kernel_name().startswith("block")
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.standard_normal((2, 128, 5, 5)))
    gy = torch.from_numpy(rng.standard_normal((2, 256, 5, 5)))
    for ra, rb in zip(grads(a, x, gy), grads(b, x, gy)):
        torch.testing.assert_close(rb, ra, rtol=1e-5, atol=1e-10)


def test_auto_picks_per_layer():
    rng = np.random.default_rng(0)
    assert SparseLinear(784, 300, make_mask(rng, 300, 784, "sparse"), backend="auto").backend == "sparse"
    assert SparseLinear(784, 300, make_mask(rng, 300, 784, "half"), backend="auto").backend == "masked"
    assert SparseLinear(10, 10, make_mask(rng, 10, 10, "tenth"), backend="auto").backend == "masked"  # tiny
    assert SparseLinear(300, 100, make_mask(rng, 100, 300, "tenth"), backend="auto").backend == "masked"
    # convolutions: the patch matrix costs per input channel, the dense convolution per channel pair
    assert SparseConv2d(256, 256, 3, make_mask(rng, 256, 256, "sparse"), backend="auto").backend == "sparse"
    assert SparseConv2d(256, 256, 3, make_mask(rng, 256, 256, "tenth"), backend="auto").backend == "sparse"
    assert SparseConv2d(256, 256, 3, make_mask(rng, 256, 256, "half"), backend="auto").backend == "masked"
    assert SparseConv2d(64, 64, 3, make_mask(rng, 64, 64, "tenth"), backend="auto").backend == "masked"
    assert SparseConv2d(20, 50, 5, make_mask(rng, 50, 20, "tenth"), backend="auto").backend == "masked"  # LeNet-5
    assert SparseConv2d(20, 500, 5, make_mask(rng, 500, 20, "tenth"), backend="auto").backend == "sparse"  # x10
    layer = SparseLinear(784, 300, make_mask(rng, 300, 784, "sparse"))  # auto is the default
    assert layer.requested_backend == "auto" and layer.kernel_name() == "csr"


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_kernels_work_in_a_forked_child():
    # (torch's own OpenMP ops can hang in a forked child; the kernels' thread pool must not)
    import multiprocessing as mp

    from sparsetopo.nn import kernels
    from sparsetopo.nn.structure import _dense_to_csr
    rng = np.random.default_rng(0)
    ip, ix = _dense_to_csr(rng.random((400, 400)) < 0.2)
    vals = rng.standard_normal(ix.size).astype(np.float32)
    xt = rng.standard_normal((400, 512)).astype(np.float32)
    xt = np.concatenate([xt] * 16, axis=1)  # enough work for two threads
    assert len(kernels.row_ranges(ip, xt.shape[1])) == min(2, torch.get_num_threads())
    expected = kernels.spmm(ip, ix, vals, xt)  # starts the kernel thread pool in the parent
    with mp.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(kernels.spmm, (ip, ix, vals, xt)).get(timeout=60)
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("block", [False, True])
def test_input_gradient_takes_the_layout_of_its_input(block):
    """A batch-major leaf input gets a C-contiguous gradient, as torch's own layers give it (autograd would
    otherwise copy a transposed view); an activation from a sparse layer gets the free transposed view,
    which the sparse layer before it reads without a copy. Both equal the masked layer's gradient."""
    from sparsetopo.topology import radix_net
    if block:
        mask = radix_net([(2, 5)], (100, 100, 1)).layers[0].T.tocsr()
    else:
        mask = make_mask(np.random.default_rng(1), 40, 30, "random")
    n_out, n_in = mask.shape
    a, b = pair(mask, (n_in, n_out), False, torch.float32, seed=2)
    assert b.kernel_name().startswith("block") == block
    gy = torch.randn(6, n_out)
    x = torch.randn(6, n_in, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    b(x).backward(gy)
    a(x_ref).backward(gy)
    assert x.grad.is_contiguous()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    first = SparseLinear(8, n_in, np.ones((n_in, 8), dtype=bool), backend="sparse")
    h = torch.relu(first(torch.randn(6, 8)))
    seen: list[torch.Tensor] = []
    h.register_hook(seen.append)
    b(h).backward(gy)
    assert seen[0].t().is_contiguous()
