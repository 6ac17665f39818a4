"""Topology type, exact RadiX-Nets and random topologies: the behaviour users rely on."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import sparsetopo.topology.core as core
from sparsetopo.errors import ConfigError, UserError
from sparsetopo.topology import (
    Topology,
    expand_kernel_mask,
    kernel_adjacency,
    load_topology,
    radix_net,
    random_equivalent,
    random_topology,
    save_topology,
)
from sparsetopo.topology.randomnets import _sample_distinct, _sample_rows

# ----------------------------------------------------------------------------- the table

TABLE = [
    # systems, kron, trim, shapes, nnz, density, paths
    ((2, 2, 2), (1, 1, 1, 1), 0, [(8, 8)] * 3, [16] * 3, 0.25, 1),
    ((2, 2, 2), (2, 2, 2, 2), 0, [(16, 16)] * 3, [64] * 3, 0.25, 4),
    ([(2, 2, 2), (2, 2, 2)], (1,) * 7, 0, [(8, 8)] * 6, [16] * 6, 0.25, 8),
    ((10, 10), (8, 3, 1), 16, [(784, 300), (300, 100)], [23520, 3000], 0.1, 3),
    ((10, 10), (8, 30, 1), 16, [(784, 3000), (3000, 100)], [235200, 30000], 0.1, 30),
]


@pytest.mark.parametrize("systems, kron, trim, shapes, nnz, density, paths", TABLE)
def test_radix_table(systems, kron, trim, shapes, nnz, density, paths):
    topo = radix_net(systems, kron, trim)
    assert topo.shapes == shapes
    assert topo.nnz == nnz
    assert topo.density == pytest.approx([density] * len(shapes), abs=1e-12)
    assert topo.path_counts() == (paths, paths)
    assert topo.is_symmetric()
    assert topo.is_path_connected()
    for m in topo.layers:
        assert isinstance(m, sp.csr_array) and m.dtype == bool


def test_radix_matches_definition_small_example():
    # (2, 2) on N' = 4: layer 0 (p=1) connects offsets {0, 1}; layer 1 (p=2) offsets {0, 2}
    topo = radix_net((2, 2))
    a0 = np.array([[(x - y) % 4 in (0, 1) for y in range(4)] for x in range(4)])
    a1 = np.array([[(x - y) % 4 in (0, 2) for y in range(4)] for x in range(4)])
    assert np.array_equal(topo.layers[0].toarray(), a0)
    assert np.array_equal(topo.layers[1].toarray(), a1)


def test_radix_trim_removes_first_inputs():
    full = radix_net((10, 10), (8, 3, 1))
    trimmed = radix_net((10, 10), (8, 3, 1), trim_inputs=16)
    assert np.array_equal(trimmed.layers[0].toarray(), full.layers[0].toarray()[16:])
    assert trimmed.meta == {"kind": "radix_net", "systems": [[10, 10]], "kron": [8, 3, 1], "trim_inputs": 16}


def _dense_radix(systems, kron):
    n_prime = math.prod(systems[0])
    out = []
    i = 0
    for system in systems:
        place = 1
        for n in system:
            offs = {(k * place) % n_prime for k in range(n)}
            a = np.array([[(x - y) % n_prime in offs for y in range(n_prime)] for x in range(n_prime)])
            out.append(np.kron(np.ones((kron[i], kron[i + 1]), dtype=bool), a))
            place *= n
            i += 1
    return out


@st.composite
def radix_configs(draw):
    first = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    systems = [first]
    for _ in range(draw(st.integers(0, 2))):
        systems.append(draw(st.permutations(first)))
    # the last system: a sub-multiset of the first's radices (its product divides N') or another permutation
    if draw(st.booleans()):
        sub = draw(st.lists(st.sampled_from(range(len(first))), min_size=1, max_size=len(first), unique=True))
        systems.append([first[j] for j in sorted(sub)])
    m = sum(len(s) for s in systems)
    kron = draw(st.lists(st.integers(1, 3), min_size=m + 1, max_size=m + 1))
    return systems, kron


@settings(max_examples=60, deadline=None)
@given(radix_configs())
def test_radix_properties(config):
    systems, kron = config
    topo = radix_net(systems, kron)
    n_prime = math.prod(systems[0])
    radices = [n for s in systems for n in s]
    for i, (n, dense) in enumerate(zip(radices, _dense_radix(systems, kron))):
        assert np.array_equal(topo.layers[i].toarray(), dense)
        assert topo.density[i] == pytest.approx(n / n_prime)
        assert topo.out_degree_range(i) == (n * kron[i + 1],) * 2
        assert topo.in_degree_range(i) == (n * kron[i],) * 2
    expected = math.prod(n for s in systems[1:] for n in s) * math.prod(kron[1:-1])
    assert topo.path_counts() == (expected, expected)
    assert topo.is_path_connected() and topo.is_symmetric()


@pytest.mark.parametrize(
    "systems, kron, trim, bad",
    [
        ([], None, 0, "empty"),
        ([()], None, 0, "empty"),
        ((2, 0, 2), None, 0, "0"),
        ((2, -1), None, 0, "-1"),
        ((2, 2.5), None, 0, "2.5"),
        ([(2, 2, 2), (2, 2), (2,)], None, 0, "product 4"),
        ([(2, 2), (3,)], None, 0, "product 3"),
        ((2, 2), (1, 1), 0, "(1, 1)"),
        ((2, 2), (1, 0, 1), 0, "0"),
        ((2, 2), None, 4, "trim_inputs=4"),
        ((2, 2), None, -1, "-1"),
    ],
)
def test_radix_refusals(systems, kron, trim, bad):
    with pytest.raises(ValueError, match=None) as info:
        radix_net(systems, kron, trim)
    assert isinstance(info.value, ConfigError)
    assert bad in str(info.value)


# ----------------------------------------------------------------------------- Topology analysis


def _dense_paths(topo: Topology) -> np.ndarray:
    p = topo.layers[0].toarray().astype(np.int64)
    for k, m in zip(topo.flatten_factors, topo.layers[1:]):
        p = np.repeat(p, k, axis=1) @ m.toarray().astype(np.int64)
    return p


@st.composite
def small_topologies(draw):
    sizes = draw(st.lists(st.integers(1, 12), min_size=2, max_size=5))
    density = draw(st.floats(0.05, 1.0))
    seed = draw(st.integers(0, 2**31))
    mode = draw(st.sampled_from(["bernoulli", "exact", "fanin"]))
    try:
        return random_topology(sizes, density, seed, mode=mode)
    except ConfigError:  # a density too low for any edge in exact / fan-in mode
        assume(False)


@settings(max_examples=60, deadline=None)
@given(small_topologies())
def test_path_counts_match_dense_product(topo):
    dense = _dense_paths(topo)
    assert topo.path_counts() == (int(dense.min()), int(dense.max()))
    assert topo.is_path_connected() == bool(dense.min() > 0)
    assert topo.is_symmetric() == bool(dense.min() == dense.max())


def test_path_counts_in_chunks_and_both_directions(monkeypatch):
    wide_in = random_topology([200, 40, 30, 8], [0.05, 0.2, 0.3], seed=3)  # fewer outputs: runs backwards
    wide_out = random_topology([8, 30, 40, 200], [0.3, 0.2, 0.05], seed=4)
    expect = [_dense_paths(t) for t in (wide_in, wide_out)]
    monkeypatch.setattr(core, "_CHUNK_ENTRIES", 50)  # a few rows per chunk
    for topo, dense in zip((wide_in, wide_out), expect):
        assert topo.path_counts() == (int(dense.min()), int(dense.max()))
        assert topo.is_path_connected() == bool(dense.min() > 0)


def test_path_counts_beyond_int64_are_floats(monkeypatch):
    topo = Topology([np.ones((3, 3))] * 4)
    assert topo.path_counts() == (27, 27)
    monkeypatch.setattr(core, "_INT_LIMIT", 10)
    lo, hi = topo.path_counts()
    assert isinstance(lo, float) and lo == hi == 27.0


def test_degrees_density_and_sizes():
    a = np.array([[1, 0, 1], [0, 0, 1]], dtype=bool)
    b = np.array([[1], [1], [0]], dtype=bool)
    topo = Topology([a, b], names=["fc1", "fc2"], meta={"note": "hand-made"})
    assert topo.sizes == [2, 3, 1]
    assert topo.nnz == [3, 2] and topo.total_nnz == 5
    assert topo.density == [0.5, 2 / 3]
    assert topo.overall_density == 5 / 9
    assert topo.in_degree_range(0) == (0, 2)
    assert topo.out_degree_range(0) == (1, 2)
    assert topo.path_counts() == (0, 1)
    assert not topo.is_path_connected()
    rows = topo.summary()
    assert rows[0]["name"] == "fc1" and rows[0]["shape"] == [2, 3] and rows[0]["in_degree"] == [0, 2]
    with pytest.raises(ConfigError, match="out of range"):
        topo.in_degree_range(2)


def test_constructor_refusals():
    with pytest.raises(ConfigError, match="do not chain"):
        Topology([np.ones((4, 3)), np.ones((4, 2))])
    with pytest.raises(ConfigError, match="empty"):
        Topology([])
    with pytest.raises(ConfigError, match="names"):
        Topology([np.ones((2, 2))], names=["a", "b"])
    with pytest.raises(ConfigError, match="unique"):
        Topology([np.ones((2, 2)), np.ones((2, 2))], names=["a", "a"])
    with pytest.raises(ConfigError, match="JSON"):
        Topology([np.ones((2, 2))], meta={"x": object()})
    with pytest.raises(ConfigError, match="kernel mask shape"):
        Topology([np.ones((2, 3))], kernel_masks=[np.ones((2, 3, 3, 3))])
    km = np.zeros((3, 2, 3, 3), dtype=bool)
    with pytest.raises(ConfigError, match="channel-level"):
        Topology([np.ones((2, 3))], kernel_masks=[km])


def _lenet5_like(seed: int = 0) -> Topology:
    conv2 = expand_kernel_mask(random_topology([6, 16], 0.5, seed, mode="exact").layers[0], 5)
    masks = [np.ones((6, 1, 5, 5)), conv2, np.ones((120, 400)), np.ones((84, 120)), np.ones((10, 84))]
    return Topology.from_weight_masks(masks, names=["conv1", "conv2", "fc1", "fc2", "fc3"], meta={"model": "lenet5"})


def test_conv_layers_at_channel_granularity():
    topo = _lenet5_like()
    assert topo.shapes[:3] == [(1, 6), (6, 16), (400, 120)]
    assert topo.flatten_factors == [1, 25, 1, 1]
    assert topo.summary()[1]["kernel"] == [5, 5]
    assert topo.summary()[1]["weights"] == 48 * 25
    assert np.array_equal(kernel_adjacency(topo.kernel_masks[1]).toarray(), topo.layers[1].toarray())
    assert topo.weight_mask(1).shape == (16, 6, 5, 5)
    assert topo.weight_mask(2).shape == (120, 400)
    # every path: input -> 6 conv1 channels -> conv2 channel -> its 25 flattened positions -> dense fc
    dense = _dense_paths(topo)
    assert topo.path_counts() == (int(dense.min()), int(dense.max()))
    assert topo.path_counts()[0] == 48 * 25 * 120 * 84


def test_flattened_junction_counted_from_either_end():
    rng = np.random.default_rng(0)
    a = rng.random((20, 3)) < 0.5  # 20 inputs, 3 "channels"
    b = rng.random((6, 2)) < 0.6   # each channel flattened into 2 inputs; 2 outputs: counted backwards
    topo = Topology([a, b])
    assert topo.flatten_factors == [2]
    dense = a.astype(int) @ np.repeat(np.eye(3, dtype=int), 2, axis=1) @ b.astype(int)
    assert topo.path_counts() == (int(dense.min()), int(dense.max()))
    assert topo.is_path_connected() == bool(dense.min() > 0)


def test_random_equivalent_keeps_shapes_and_nnz():
    topo = radix_net((10, 10), (8, 3, 1), 16)
    eq = random_equivalent(topo, seed=5)
    assert eq.shapes == topo.shapes and eq.nnz == topo.nnz
    assert eq == random_equivalent(topo, seed=5)
    assert eq != random_equivalent(topo, seed=6)
    assert eq.meta["of"] == topo.meta and eq.meta["seed"] == 5
    lenet = _lenet5_like()
    lenet_eq = random_equivalent(lenet, 1)
    assert lenet_eq.nnz == lenet.nnz and lenet_eq.names == lenet.names
    # a full-kernel conv mask stays full over the new channel pairs
    assert lenet_eq.kernel_masks[1].sum() == lenet.kernel_masks[1].sum()
    # a partial (weight-level) mask keeps its number of weights
    km = np.zeros((4, 3, 3, 3), dtype=bool)
    km.reshape(-1)[[0, 5, 40, 77, 100]] = True
    partial = Topology.from_weight_masks([km])
    peq = random_equivalent(partial, 2)
    assert peq.kernel_masks[0].sum() == 5 and peq.kernel_masks[0].shape == km.shape


# ----------------------------------------------------------------------------- random topologies


def test_random_is_deterministic_for_a_seed():
    for mode in ("bernoulli", "exact", "fanin"):
        a = random_topology([50, 40, 10], 0.2, seed=7, mode=mode)
        assert a == random_topology([50, 40, 10], 0.2, seed=7, mode=mode)
        assert a != random_topology([50, 40, 10], 0.2, seed=8, mode=mode)
        assert a.meta == {"kind": "random", "mode": mode, "sizes": [50, 40, 10], "density": [0.2, 0.2], "seed": 7}


@pytest.mark.parametrize("density", [0.01, 0.3, 0.75, 1.0])
def test_random_exact_and_fanin_counts(density):
    exact = random_topology([300, 200, 50], density, seed=1, mode="exact")
    assert exact.nnz == [math.floor(density * 300 * 200 + 0.5), math.floor(density * 200 * 50 + 0.5)]
    fanin = random_topology([300, 200, 50], density, seed=1, mode="fanin")
    for i, n_in in enumerate([300, 200]):
        d = math.floor(density * n_in + 0.5)
        assert fanin.in_degree_range(i) == (d, d)


def test_random_bernoulli_edge_count_is_binomial():
    topo = random_topology([1000, 1000], [0.1], seed=2)
    n = 1000 * 1000
    assert abs(topo.nnz[0] - 0.1 * n) < 5 * math.sqrt(n * 0.1 * 0.9)
    per_layer = random_topology([400, 300, 20], [0.5, 0.05], seed=2)
    assert per_layer.density[0] == pytest.approx(0.5, abs=0.01)
    assert per_layer.density[1] == pytest.approx(0.05, abs=0.03)


def test_random_large_layer_never_builds_a_dense_matrix():
    tracemalloc.start()
    try:
        topo = random_topology([200_000, 200_000], 5e-6, seed=0, mode="exact")  # 4e10 possible edges
        fan = random_topology([200_000, 100_000], 1e-5, seed=0, mode="fanin")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert topo.nnz == [200_000]
    assert fan.in_degree_range(0) == (2, 2)
    assert peak < 64 * 2**20  # a dense bool matrix would take 40 GB


def test_sampling_is_uniform_and_distinct():
    rng = np.random.default_rng(0)
    counts = np.zeros(10)
    for _ in range(3000):
        s = _sample_distinct(rng, 10, 3)
        assert len(set(s.tolist())) == 3 and np.all(np.diff(s) > 0)
        counts[s] += 1
    assert np.all(np.abs(counts / 3000 - 0.3) < 0.03)
    dense = _sample_distinct(rng, 10, 8)  # the complement path
    assert len(dense) == 8 and len(set(dense.tolist())) == 8
    rows = _sample_rows(rng, 2000, 6, 2)
    assert np.all(rows[:, 1] > rows[:, 0])
    freq = np.bincount(rows.reshape(-1), minlength=6) / 4000
    assert np.all(np.abs(freq - 1 / 6) < 0.03)
    big = _sample_distinct(rng, 1 << 40, 1000)
    assert len(np.unique(big)) == 1000


@pytest.mark.parametrize(
    "sizes, density, seed, mode, bad",
    [
        ([784], 0.1, 0, "bernoulli", "at least two"),
        ([784, 0], 0.1, 0, "bernoulli", "0"),
        ([784, 300], 0.0, 0, "bernoulli", "0.0"),
        ([784, 300], 1.5, 0, "bernoulli", "1.5"),
        ([784, 300], float("nan"), 0, "bernoulli", "nan"),
        ([784, 300, 100], [0.1], 0, "bernoulli", "1 values for 2 layers"),
        ([784, 300], 0.1, -1, "bernoulli", "-1"),
        ([784, 300], 0.1, 0, "uniform", "uniform"),
        ([10, 10], 0.001, 0, "exact", "no edges"),
        ([10, 10], 0.01, 0, "fanin", "fan-in 0"),
    ],
)
def test_random_refusals(sizes, density, seed, mode, bad):
    with pytest.raises(ConfigError) as info:
        random_topology(sizes, density, seed, mode=mode)
    assert bad in str(info.value)


# ----------------------------------------------------------------------------- files


def test_save_load_round_trip(tmp_path):
    for topo in (radix_net((10, 10), (8, 3, 1), 16), _lenet5_like(), random_topology([5, 7], 0.3, 1)):
        path = tmp_path / "t.npz"
        save_topology(topo, path)
        back = load_topology(path)
        assert back == topo
        assert back.names == topo.names and back.meta == topo.meta
        for a, b in zip(back.kernel_masks, topo.kernel_masks):
            assert (a is None and b is None) or np.array_equal(a, b)
    assert not [p for p in tmp_path.iterdir() if p.name != "t.npz"]  # no temp files left behind


def _rewrite(path, mutate):
    with np.load(path) as npz:
        data = {k: npz[k] for k in npz.files}
    mutate(data)
    with open(path, "wb") as fh:
        np.savez(fh, **data)


def _set_header(data, **changes):
    import json

    header = json.loads(bytes(data["header"]).decode())
    for key, value in changes.items():
        if key == "nnz0":
            header["layers"][0]["nnz"] = value
        else:
            header[key] = value
    data["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda d: d.pop("indices_1"), "missing array"),
        (lambda d: d.pop("header"), "no 'header'"),
        (lambda d: d.__setitem__("header", np.frombuffer(b"{not json", dtype=np.uint8)), "not valid JSON"),
        (lambda d: _set_header(d, format="other"), "format"),
        (lambda d: _set_header(d, version=99), "version"),
        (lambda d: _set_header(d, nnz0=5), "nnz"),
        (lambda d: d.__setitem__("indices_0", d["indices_0"] + 10_000), "out of range"),
        (lambda d: d.__setitem__("indices_0", d["indices_0"][::-1].copy()), "unsorted"),
        (lambda d: d.__setitem__("kernel_1", d["kernel_1"][:-1]), "kernel mask"),
        (lambda d: _set_header(d, names=["a", "b"]), "names"),
        (lambda d: d.__setitem__("extra", np.zeros(2)), "unexpected"),
    ],
)
def test_load_refuses_mismatched_files(tmp_path, mutate, problem):
    path = tmp_path / "lenet.npz"
    save_topology(_lenet5_like(), path, encoding="indices")
    _rewrite(path, mutate)
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    assert str(path) in str(info.value) and problem in str(info.value)


def test_load_refuses_corrupt_files(tmp_path):
    path = tmp_path / "t.npz"
    save_topology(radix_net((10, 10), (8, 3, 1), 16), path)
    raw = path.read_bytes()
    cases = {
        "truncated.npz": raw[: len(raw) // 2],
        "garbage.npz": b"this is not a topology",
        "empty.npz": b"",
        "flipped.npz": raw[:200] + bytes(b ^ 0xFF for b in raw[200:400]) + raw[400:],
    }
    for name, data in cases.items():
        bad = tmp_path / name
        bad.write_bytes(data)
        with pytest.raises(UserError) as info:
            load_topology(bad)
        assert name in str(info.value)
    with pytest.raises(ConfigError, match="no such file"):
        load_topology(tmp_path / "missing.npz")


def _set_indptr(data, index, value):  # layer 2 is LeNet-5's dense 400 x 120 fc1
    indptr = data["indptr_2"].copy()
    indptr[index] = value
    data["indptr_2"] = indptr


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda d: _set_indptr(d, 0, 5), "layer 2: indptr[0] is 5, must be 0"),
        (lambda d: _set_indptr(d, 3, 0), "layer 2: indptr decreases from indptr[2] = "),
        (lambda d: _set_indptr(d, -1, d["indptr_2"][-1] - 1), "layer 2: indptr ends at "),
        (lambda d: d.__setitem__("indptr_2", d["indptr_2"][:-1].copy()), "layer 2: indptr has "),
        (lambda d: d.__setitem__("indices_2", d["indices_2"][:-1].copy()), "layer 2: "),
    ],
)
def test_load_names_what_is_wrong_with_indptr(tmp_path, mutate, problem):
    path = tmp_path / "lenet.npz"
    save_topology(_lenet5_like(), path, encoding="indices")
    _rewrite(path, mutate)
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    msg = str(info.value)
    assert problem in msg and "\n" not in msg
    if "decreases" in problem:
        assert msg.endswith("to indptr[3] = 0, must be non-decreasing")
    if "ends at" in problem:
        assert "must equal the header's nnz" in msg
    if "has " in problem:
        assert "must have" in msg and "rows + 1" in msg
    if problem == "layer 2: ":
        assert "column indices, header says nnz" in msg


@pytest.mark.parametrize("encoding", ["auto", "indices", "bits"])
def test_every_encoding_round_trips_and_dense_layers_are_stored_as_bits(tmp_path, encoding):
    topo = _lenet5_like()
    path = tmp_path / f"{encoding}.npz"
    save_topology(topo, path, encoding=encoding)
    assert load_topology(path) == topo
    with np.load(path) as npz:
        names = set(npz.files)
    dense_fc = 2  # LeNet-5's 400 x 120 fc1 at high density: 6 KB of bits instead of 4 bytes per connection
    assert (f"bits_{dense_fc}" in names) == (encoding != "indices")
    sparse = random_topology([784, 300], 0.01, seed=0)
    save_topology(sparse, tmp_path / "sparse.npz", encoding=encoding)
    with np.load(tmp_path / "sparse.npz") as npz:
        assert ("bits_0" in npz.files) == (encoding == "bits")  # at density 0.01 indices are smaller


@pytest.mark.parametrize("mutate, problem", [
    (lambda d: d.__setitem__("bits_2", d["bits_2"][:-1].copy()), "layer 2: bit mask has"),
    (lambda d: d.__setitem__("bits_2", np.zeros_like(d["bits_2"])), "layer 2: bit mask has 0 connections"),
    (lambda d: d.__setitem__("indptr_2", np.zeros(401, dtype=np.int32)), "both a bit mask and index arrays"),
])
def test_load_refuses_bad_bit_masks(tmp_path, mutate, problem):
    path = tmp_path / "lenet.npz"
    save_topology(_lenet5_like(), path, encoding="bits")
    _rewrite(path, mutate)
    with pytest.raises(ConfigError, match=problem):
        load_topology(path)


def test_relabelled_radix_net_is_the_same_graph_with_units_renamed():
    from sparsetopo.topology import relabel_units

    topo = radix_net((10, 10), (8, 3, 1), 16)
    again = relabel_units(topo, 7)
    assert again == relabel_units(topo, 7) and again != relabel_units(topo, 8) and again != topo
    for a, b in zip(topo.layers, again.layers):
        assert a.shape == b.shape and a.nnz == b.nnz
        assert sorted(np.asarray(a.sum(axis=0)).ravel()) == sorted(np.asarray(b.sum(axis=0)).ravel())
        assert sorted(np.asarray(a.sum(axis=1)).ravel()) == sorted(np.asarray(b.sum(axis=1)).ravel())
    # every input still reaches every output, by the same number of paths (a permuted path-count matrix)
    paths = (topo.layers[0].astype(np.int64) @ topo.layers[1].astype(np.int64)).toarray()
    moved = (again.layers[0].astype(np.int64) @ again.layers[1].astype(np.int64)).toarray()
    assert (paths > 0).all() and (moved > 0).all()
    assert sorted(paths.ravel()) == sorted(moved.ravel())


def test_radix_spec_takes_a_permutation_seed():
    from sparsetopo.topology.spec import parse_topology

    spec = parse_topology("radix:systems=10x10,kron=8x3x1,trim=16,permute=3")
    assert spec.permute == 3 and str(spec) == "radix:systems=10x10,kron=8x3x1,trim=16,permute=3"
    with pytest.raises(ConfigError, match="permute -1 must be a seed"):
        parse_topology("radix:systems=10x10,permute=-1")
