"""The challenge generator, the numba engine against the scipy reference, and the official truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from sparsetopo.challenge import (
    ChallengeNetwork,
    categories,
    engine,
    generate_layers,
    generate_network,
    images_to_inputs,
    infer,
    load_inputs_file,
    load_network,
    read_truth,
    reference_infer,
)
from sparsetopo.challenge.engine import resolve_threads
from sparsetopo.challenge.generate import resample_matrix
from sparsetopo.errors import ConfigError
from sparsetopo.topology import radix_net


def _components(layer: sp.csr_array) -> int:
    graph = sp.bmat([[None, layer], [layer.T, None]])
    return connected_components(graph, directed=False)[0]


def test_generator_first_six_layers_are_the_radix_net() -> None:
    layers = generate_layers(1024, 14, seed=5)
    radix = radix_net([(2,) * 6], kron=(16,) * 7)
    for l in range(6):
        assert (layers[l] != radix.layers[l]).nnz == 0
    for l, layer in enumerate(layers):
        assert layer.shape == (1024, 1024) and layer.nnz == 32768
        assert np.all(np.diff(layer.indptr) == 32) and np.all(layer.sum(axis=0) == 32)
        # a permuted copy of RadiX layer l mod 6: as many connected components as its place value
        assert _components(layer) == 2 ** (l % 6)
    assert (layers[6] != radix.layers[0]).nnz > 0
    assert all((a != b).nnz == 0 for a, b in zip(layers, generate_layers(1024, 14, seed=5), strict=True))
    assert (generate_layers(1024, 7, seed=6)[6] != layers[6]).nnz > 0


def test_generated_network_tables_match_its_layers() -> None:
    net = generate_network(4096, 9, seed=1)
    assert net.bias == -0.35 and net.edges == 9 * 4096 * 32
    rebuilt = ChallengeNetwork.from_layers(generate_layers(4096, 9, seed=1), -0.35)
    assert np.array_equal(net.idx, rebuilt.idx) and np.array_equal(net.tidx, rebuilt.tidx)


@pytest.mark.parametrize("bad", [1000, 16, 48])
def test_generator_refuses_sizes_that_are_not_radix_nets(bad: int) -> None:
    with pytest.raises(ConfigError, match=f"neurons \\({bad}\\)"):
        generate_layers(bad, 3)


def _irregular_layers(n: int, count: int, seed: int, values: bool) -> list[sp.csr_array]:
    """Random square layers with varying row and column counts (the ELL tables need padding)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        mask = rng.random((n, n)) < rng.uniform(0.05, 0.3)
        w = rng.uniform(-0.05, 0.2, (n, n)) if values else np.full((n, n), 0.0625)
        out.append(sp.csr_array(np.where(mask, w, 0.0)))
    return out


CASES = [   # name, layers, bias, the largest input density
    ("challenge-like", lambda: generate_layers(256, 20, seed=2), -0.3, 0.25),
    ("irregular uniform", lambda: _irregular_layers(96, 12, 3, False), -0.1, 0.6),
    ("irregular valued", lambda: _irregular_layers(96, 12, 4, True), -0.05, 0.3),
    ("positive bias", lambda: _irregular_layers(64, 8, 5, True), 0.1, 0.3),
]


@pytest.mark.parametrize("name, make, bias, top", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_engine_equals_reference_bit_for_bit(name: str, make, bias: float, top: float, dtype: str) -> None:
    layers = make()
    n = layers[0].shape[0]
    rng = np.random.default_rng(7)
    density = rng.uniform(0.0, top, (300, 1))
    inputs = sp.csr_array((rng.random((300, n)) < density) * rng.uniform(0.5, 2.0, (300, n)))
    net = ChallengeNetwork.from_layers(layers, bias)
    expect = reference_infer(inputs, layers, bias, dtype=dtype)
    assert 0 < categories(expect).size < 300            # some rows die, some survive
    few_live = {"batch": 10, "threads": resolve_threads(None)}     # blocks shrink to give every thread work
    for kwargs in ({}, {"pull_fraction": 0.0, "threads": 1}, {"pull_fraction": 1.0, "batch": 37, "block": 3}, few_live):
        got = infer(net, inputs, dtype=dtype, return_activations=True, **kwargs)
        assert np.array_equal(got.categories, categories(expect))
        assert got.activations.shape == expect.shape
        assert (got.activations != expect).nnz == 0     # every value identical, not just close
        assert got.activations.dtype == np.dtype(dtype)


@pytest.mark.parametrize("name, make, bias, top", CASES[:2], ids=[c[0] for c in CASES[:2]])
def test_wide_layer_paths_equal_reference_bit_for_bit(name: str, make, bias: float, top: float,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The paths wide layers take (dense rows pulled eight at a time from their transposed state, push sums
    in the skewed layout), switched on at these small widths, still give the reference's values exactly."""
    monkeypatch.setattr(engine, "PULL8_MIN", 1)
    monkeypatch.setattr(engine, "SKEW_MIN", 1)
    monkeypatch.setattr(engine, "SKEW_SHIFT", 4)     # a skew every 16 outputs, so many segments at n = 96
    layers = make()
    n = layers[0].shape[0]
    rng = np.random.default_rng(8)
    inputs = sp.csr_array((rng.random((300, n)) < rng.uniform(0.0, top, (300, 1))) * rng.uniform(0.5, 2.0, (300, n)))
    net = ChallengeNetwork.from_layers(layers, bias)
    expect = reference_infer(inputs, layers, bias)
    for kwargs in ({"threads": 1}, {"pull_fraction": 0.0, "threads": 1}, {"pull_fraction": 1.0}, {"block": 8}):
        got = infer(net, inputs, return_activations=True, **kwargs)
        assert np.array_equal(got.categories, categories(expect))
        assert (got.activations != expect).nnz == 0


def test_engine_equals_reference_at_16384_neurons() -> None:
    """At a width where the wide-layer paths switch on by themselves (a generated 16,384-neuron network)."""
    assert engine.skew_shift(16384) > 0 and 16384 >= engine.PULL8_MIN
    net = generate_network(16384, 3, seed=0)
    layers = [net.layer(i) for i in range(3)]
    rng = np.random.default_rng(9)
    inputs = sp.csr_array((rng.random((24, 16384)) < rng.uniform(0.05, 0.9, (24, 1))).astype(np.float64))
    expect = reference_infer(inputs, layers, net.bias)
    assert 0 < categories(expect).size
    got = infer(net, inputs, return_activations=True, threads=1)
    assert np.array_equal(got.categories, categories(expect))
    assert (got.activations != expect).nnz == 0


def test_engine_handles_empty_and_dead_inputs() -> None:
    net = generate_network(1024, 8)
    none = infer(net, sp.csr_array((5, 1024)))
    assert none.categories.size == 0 and none.n_inputs == 5
    one = sp.csr_array(np.eye(1, 1024))                  # a single pixel dies in the first layer
    assert infer(net, one).categories.size == 0
    with pytest.raises(ConfigError, match="inputs have 100 columns; the network has 1024 neurons"):
        infer(net, sp.csr_array((2, 100)))
    with pytest.raises(ConfigError, match="threads must be in 1.."):
        infer(net, one, threads=10_000)


def test_mnist_resampling_is_fft_resampling_column_major() -> None:
    from scipy.signal import resample

    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    got = images_to_inputs(images, 1024, threshold=0.5).toarray()
    for i in range(3):
        fft = resample(resample(images[i] / 255.0, 32, axis=0), 32, axis=1)   # [row y, column x]
        assert np.array_equal(got[i], (fft > 0.5).T.ravel())                 # column = 32 x + y
    assert np.allclose(resample_matrix(28, 32)[::8, ::7], np.eye(4))        # output 8x samples input 7x


# --- the official network: loaded once for the module -------------------------------------------------

@pytest.fixture(scope="module")
def official(data_root: Path):
    folder = data_root / "graph-challenge"
    if not (folder / "neuron1024").is_dir():
        pytest.skip("official challenge files not present")
    net = load_network(1024, 120, data_root)
    inputs = load_inputs_file(folder / "sparse-images-1024-first1200.tsv.gz", 1024)
    truth = read_truth(folder / "neuron1024-l120-categories.tsv.gz")
    return net, inputs, truth


def test_official_network_is_radix_plus_permuted_copies(official) -> None:
    net, _, _ = official
    assert net.bias == -0.3 and net.edges == 120 * 32768 and net.uniform
    radix = radix_net([(2,) * 6], kron=(16,) * 7)
    for l in range(6):
        assert (net.layer(l).astype(bool) != radix.layers[l]).nnz == 0
    for l in (6, 13, 59, 119):
        assert _components(net.layer(l)) == 2 ** (l % 6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_official_truth_reproduced_on_the_1200_official_images(official, dtype: str) -> None:
    net, inputs, truth = official
    assert inputs.shape == (1200, 1024) and inputs.nnz == 122713 and truth.size == 1812
    expected = truth[truth <= 1200]
    assert expected.size == 19
    assert np.array_equal(infer(net, inputs, dtype=dtype).categories, expected)
    assert np.array_equal(categories(reference_infer(inputs, net, dtype=dtype)), expected)


def test_regenerated_mnist_inputs_close_to_the_official_ones(official, data_root: Path) -> None:
    from sparsetopo.challenge import mnist_inputs

    _, inputs, _ = official
    mine = mnist_inputs(1024, data_root, count=1200)
    assert mine.shape == (1200, 1024)
    differ = (mine != inputs).nnz
    assert differ < 700                                  # of 1,228,800 pixels (627 measured)
    flipped = sp.csr_array(mine.toarray().reshape(1200, 32, 32).transpose(0, 2, 1).reshape(1200, 1024))
    assert (flipped != inputs).nnz > 50 * differ         # the row-major layout would be far off


def test_torch_path_finds_the_reference_categories() -> None:
    # the torch-cuda backend's code, run on the CPU (no GPU here): same categories as the reference
    from sparsetopo.challenge.backends import run_torch

    layers = generate_layers(256, 16, seed=2)
    net = ChallengeNetwork.from_layers(layers, -0.3)
    rng = np.random.default_rng(11)
    inputs = sp.csr_array((rng.random((120, 256)) < rng.uniform(0, 0.3, (120, 1))).astype(np.float64))
    expect = categories(reference_infer(inputs, net, dtype="float64"))
    assert 0 < expect.size < 120
    got = run_torch(net, inputs, device="cpu", batch=50, dtype="float64")
    assert np.array_equal(got.result.categories, expect) and got.backend == "torch-cpu"
