"""Topology specs, width scaling and sparse models built from them (the paper's Fig. 9 set-ups)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsetopo.errors import ConfigError
from sparsetopo.models import instantiate
from sparsetopo.models.sparse import parse_scale, parse_topology, resolve_network
from sparsetopo.topology import Topology, random_topology, save_topology

MNIST = ((1, 28, 28), 10)
CIFAR = ((3, 32, 32), 10)
DENSE_LENET300 = 266_200
DENSE_LENET5 = 430_500


def weights(network) -> tuple[int, int]:
    total = sum(layer.weights for layer in network.arch.layers)
    nonzero = 0
    for layer in network.arch.layers:
        mask = network.masks.get(layer.name)
        if mask is None:
            nonzero += layer.weights
        elif hasattr(mask, "nnz"):
            nonzero += int(mask.nnz)
        else:
            m = np.asarray(mask)
            nonzero += int(m.sum()) * (layer.kernel[0] * layer.kernel[1] if m.ndim == 2 and layer.kind == "conv" else 1)
    return total, nonzero


def test_spec_parsing() -> None:
    assert parse_topology("dense").kind == "dense"
    spec = parse_topology("random:density=1/10,mode=fanin,seed=3")
    assert (spec.kind, spec.density, spec.mode, spec.seed) == ("random", 0.1, "fanin", 3)
    spec = parse_topology("radix:systems=10x10,kron=8x3x1,trim=16")
    assert (spec.systems, spec.kron, spec.trim) == (((10, 10),), (8, 3, 1), 16)
    assert parse_topology("radix:systems=2x2x2+2x2x2").systems == ((2, 2, 2), (2, 2, 2))
    assert parse_topology("file:runs/a/topology.npz").path == "runs/a/topology.npz"
    assert parse_scale("connections:10").density == pytest.approx(0.1)
    assert parse_scale("neurons:1/20").density == pytest.approx(0.05)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("random:density=0", "density 0 must be in (0, 1]"),
        ("random:density=abc", "density 'abc' is not a number"),
        ("random:mode=wild,density=0.1", "mode 'wild' must be one of"),
        ("random:dens=0.1", "unknown option(s) dens"),
        ("random:density=0.1,distribution=erdos", "distribution 'erdos' must be one of uniform, erk"),
        ("random:density", "'density' is not key=value"),
        ("radix:kron=8x3x1", "radix needs systems="),
        ("radix:systems=10x0", "system '10x0' must be positive"),
        ("radix:systems=10x10,trim=-1", "trim -1 must be >= 0"),
        ("dense:x=1", "'dense' takes no options"),
        ("file:", "'file:' needs a path"),
        ("lattice:n=3", "unknown kind 'lattice'"),
    ],
)
def test_malformed_specs_name_the_bad_part(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_network("lenet300", *MNIST, topology=spec)
    assert message in str(exc.value)


def test_radix_nets_of_the_paper_fit_lenet300() -> None:
    small = resolve_network("lenet300", *MNIST, topology="radix:systems=10x10,kron=8x3x1,trim=16")
    assert small.topology.nnz == [23_520, 3_000] and small.topology.density == pytest.approx([0.1, 0.1])
    large = resolve_network("lenet300", *MNIST, topology="radix:systems=10x10,kron=8x30x1,trim=16",
                            scale="connections:10")
    assert [(l.fan_in, l.fan_out) for l in large.arch.layers] == [(784, 3000), (3000, 100), (100, 10)]
    total, nonzero = weights(large)
    assert abs(nonzero - DENSE_LENET300) / DENSE_LENET300 < 0.02
    with pytest.raises(ConfigError, match=r"layer fc1 of lenet300 needs a 784x3000 \(in x out\) adjacency, the topology gives 784x300"):
        resolve_network("lenet300", *MNIST, topology="radix:systems=10x10,kron=8x3x1,trim=16", scale="connections:10")


@pytest.mark.parametrize("k", [1, 2, 10, 100])
def test_fixed_connections_scaling_keeps_the_connection_count(k: int) -> None:
    net = resolve_network("lenet300", *MNIST, topology="random:mode=exact", scale=f"connections:{k}")
    assert [(l.fan_in, l.fan_out) for l in net.arch.layers] == [(784, 300 * k), (300 * k, 100), (100, 10)]
    total, nonzero = weights(net)
    assert abs(nonzero - DENSE_LENET300) / DENSE_LENET300 < 0.02


@pytest.mark.parametrize("dataset", [MNIST, CIFAR])
@pytest.mark.parametrize("k", [2, 10])
def test_lenet5_fixed_connections_widens_conv2_and_fc1(dataset, k: int) -> None:
    net = resolve_network("lenet5", *dataset, topology="random", scale=f"connections:{k}")
    conv1, conv2, fc1, fc2 = net.arch.layers
    side = 16 if dataset is MNIST else 25
    assert (conv2.fan_in, conv2.fan_out) == (20, 50 * k) and (fc1.fan_in, fc1.fan_out) == (50 * k * side, 500)
    assert set(net.masks) == {"conv2", "fc1"}  # conv1 and the last layer stay dense, as in the paper
    assert np.asarray(net.masks["conv2"]).shape == (50 * k, 20)  # a channel mask
    dense = resolve_network("lenet5", *dataset)
    dense_total, _ = weights(dense)
    _, nonzero = weights(net)
    assert abs(nonzero - dense_total) / dense_total < 0.02


def test_fixed_neurons_keeps_shapes_and_sets_density() -> None:
    net = resolve_network("lenet300", *MNIST, topology="random:mode=exact", scale="neurons:1/20")
    assert net.topology.shapes == [(784, 300), (300, 100)]
    assert net.topology.density == pytest.approx([0.05, 0.05], abs=1e-4)


def test_erk_spreads_one_density_over_the_layers_by_their_shapes() -> None:
    """ERK (RigL's default): all sparse weights together hold the density, each layer's density is
    proportional to sum(shape) / prod(shape), and a layer that would pass 1 is dense."""
    spec = parse_topology("random:distribution=erk,mode=exact,density=1/20")
    assert str(spec) == "random:density=0.05,mode=exact,distribution=erk"
    assert str(parse_topology("random:density=0.05,distribution=uniform")) == "random:density=0.05"
    net = resolve_network("lenet5", *MNIST, topology=spec)  # conv2 (50x20x5x5) and fc1 (800 -> 500)
    total, nonzero = weights(net)
    sparse = [net.arch.layer(n) for n in ("conv2", "fc1")]
    kept = nonzero - (total - sum(layer.weights for layer in sparse))
    assert kept == pytest.approx(0.05 * sum(layer.weights for layer in sparse), abs=25)  # conv2: whole 5x5 kernels
    d_conv, d_fc = net.topology.density
    ratio = ((50 + 20 + 5 + 5) / (50 * 20 * 25)) / ((500 + 800) / (500 * 800))
    assert d_conv / d_fc == pytest.approx(ratio, rel=0.01)
    # fixed neurons sets the density that ERK spreads; the uniform spec gives each layer that density
    erk = resolve_network("lenet300", *MNIST, topology="random:distribution=erk,mode=exact", scale="neurons:0.1")
    assert erk.topology.density[1] > 0.1 > erk.topology.density[0]
    assert sum(int(m.nnz) for m in erk.masks.values()) == pytest.approx(0.1 * (784 * 300 + 300 * 100), abs=2)


def test_erk_caps_small_layers_at_dense() -> None:
    from sparsetopo.topology.randomnets import erk_densities

    shapes = [(300, 784), (100, 300), (10, 100)]
    d = erk_densities(shapes, 0.1)
    assert d[2] == 1.0 and 0 < d[0] < d[1] < 1
    assert sum(di * a * b for di, (a, b) in zip(d, shapes)) == pytest.approx(0.1 * sum(a * b for a, b in shapes))
    assert d[0] / d[1] == pytest.approx(((300 + 784) / (300 * 784)) / ((100 + 300) / (100 * 300)))
    assert erk_densities([(30, 40)], 0.2) == pytest.approx([0.2])  # one layer: the density itself
    assert erk_densities(shapes, 1.0) == [1.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="density 0 must be in"):
        erk_densities(shapes, 0)


def test_scale_and_explicit_density_must_agree() -> None:
    with pytest.raises(ConfigError, match="density 0.2 but --scale connections:10 implies 0.1"):
        resolve_network("lenet300", *MNIST, topology="random:density=0.2", scale="connections:10")
    assert resolve_network("lenet300", *MNIST, topology="random:density=0.1", scale="connections:10").topology
    with pytest.raises(ConfigError, match="--topology dense has density 1"):
        resolve_network("lenet300", *MNIST, topology="dense", scale="neurons:0.5")
    with pytest.raises(ConfigError, match="give density=D in the spec or a --scale"):
        resolve_network("lenet300", *MNIST, topology="random")


def test_file_topology_by_names_and_shape_refusal(tmp_path) -> None:
    topo = random_topology([784, 300, 100], 0.2, seed=1)
    path = tmp_path / "t.npz"
    save_topology(topo, path)
    net = resolve_network("lenet300", *MNIST, topology=f"file:{path}")
    assert net.topology.nnz == topo.nnz
    named = Topology(topo.layers, names=["fc1", "fc2"])
    save_topology(named, path)
    assert resolve_network("lenet300", *MNIST, topology=f"file:{path}").topology.names == ["fc1", "fc2"]
    wrong = random_topology([784, 200, 100], 0.2, seed=1)
    save_topology(wrong, path)
    with pytest.raises(ConfigError, match="needs a 784x300 .* gives 784x200"):
        resolve_network("lenet300", *MNIST, topology=f"file:{path}")
    with pytest.raises(ConfigError, match="no such file"):
        resolve_network("lenet300", *MNIST, topology=f"file:{tmp_path / 'missing.npz'}")


def test_sparse_model_keeps_channel_masks_through_training_steps() -> None:
    net = resolve_network("lenet5", *MNIST, topology="random:density=0.1,seed=2")
    torch.manual_seed(0)
    model = instantiate(net.arch, net.masks, init="sparse", backend="masked")
    channel = torch.as_tensor(np.asarray(net.masks["conv2"]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        loss = model(torch.randn(8, 1, 28, 28)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    weight = model.conv2.dense_weight()
    assert weight.shape == (50, 20, 5, 5)
    assert torch.equal(weight.ne(0).any(dim=(2, 3)), channel)  # every kernel position of a kept pair, none else
    assert model.conv2.nnz == int(channel.sum()) * 25
