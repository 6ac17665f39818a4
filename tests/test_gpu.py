"""The CUDA paths of the sparse layers, dynamic sparsity and training, each against the same computation on
the CPU. Every test here needs a CUDA device and skips without one; ``benchmarks/device_check.sh`` runs
them on a GPU machine."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sparsetopo.cli import main
from sparsetopo.nn import SparseConv2d, SparseLinear
from sparsetopo.topology import radix_net, random_topology
from sparsetopo.training.dst import DynamicSparsity

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

QUICK = ["--steps", "60", "--eval-every", "30", "--threads", "1", "--quiet"]


def _grads(layer: nn.Module, x: torch.Tensor, gy: torch.Tensor) -> list[torch.Tensor]:
    x = x.clone().requires_grad_(True)
    y = layer(x)
    param = layer.weight if layer.backend == "masked" else layer.weight_values
    gx, gw, gb = torch.autograd.grad(y, (x, param, layer.bias), gy)
    return [t.cpu() for t in (y, gx, gw, gb)]


def _er(rows: int, cols: int, density: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, cols)) < density


LINEAR = {
    "er": lambda: (784, 300, _er(300, 784, 0.1, 0)),
    "radix": lambda: (128, 256, radix_net([(2, 2)], (32, 64, 1)).layers[0].T.tocsr()),  # the block kernel
}


@pytest.mark.parametrize("backend", ["masked", "sparse"])
@pytest.mark.parametrize("kind", sorted(LINEAR))
def test_a_linear_layer_on_cuda_computes_what_it_computes_on_the_cpu(kind: str, backend: str) -> None:
    n_in, n_out, mask = LINEAR[kind]()
    torch.manual_seed(0)
    cpu = SparseLinear(n_in, n_out, mask, backend=backend).double()
    gpu = copy.deepcopy(cpu).cuda()
    g = torch.Generator().manual_seed(1)
    x, gy = torch.randn(64, n_in, generator=g, dtype=torch.float64), torch.randn(64, n_out, generator=g, dtype=torch.float64)
    for a, b in zip(_grads(cpu, x, gy), _grads(gpu, x.cuda(), gy.cuda())):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)
    assert gpu.nnz == cpu.nnz and gpu.kernel_name() == cpu.kernel_name()


@pytest.mark.parametrize("channel", [True, False], ids=["channel", "weight"])
@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_a_convolution_on_cuda_computes_what_it_computes_on_the_cpu(backend: str, channel: bool) -> None:
    mask = _er(50, 20, 0.2, 2) if channel else _er(50, 20 * 25, 0.2, 2).reshape(50, 20, 5, 5)
    torch.manual_seed(0)
    cpu = SparseConv2d(20, 50, 5, mask, backend=backend).double()
    gpu = copy.deepcopy(cpu).cuda()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 20, 12, 12, generator=g, dtype=torch.float64)
    gy = torch.randn(8, 50, 8, 8, generator=g, dtype=torch.float64)
    for a, b in zip(_grads(cpu, x, gy), _grads(gpu, x.cuda(), gy.cuda())):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)


def test_a_layer_moved_to_cuda_and_back_keeps_its_structure_and_weights() -> None:
    layer = SparseLinear(64, 32, _er(32, 64, 0.2, 4), backend="sparse")
    back = copy.deepcopy(layer).cuda().cpu()
    assert torch.equal(back.mask_dense(), layer.mask_dense())
    assert torch.equal(back.weight_values, layer.weight_values)
    state = copy.deepcopy(layer).cuda().state_dict()
    again = SparseLinear(64, 32, _er(32, 64, 0.2, 4), backend="sparse")
    again.load_state_dict({k: v.cpu() for k, v in state.items()})
    assert torch.equal(again.weight_values, layer.weight_values)


@pytest.mark.parametrize("backend", ["masked", "sparse"])
@pytest.mark.parametrize("method", ["set", "rigl"])
def test_dynamic_sparsity_on_cuda_keeps_nnz_and_zeroes_what_it_grows(method: str, backend: str) -> None:
    torch.manual_seed(0)
    a = random_topology([12, 16], 0.3, seed=1).layers[0]
    b = random_topology([16, 4], 0.3, seed=2).layers[0]
    model = nn.Sequential(SparseLinear(12, 16, a.T, backend=backend), nn.ReLU(),
                          SparseLinear(16, 4, b.T, backend=backend)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    dst = DynamicSparsity(model, method, interval=5, fraction=0.5, end_step=30, seed=0)
    layers = [model[0], model[2]]
    nnz = [m.nnz for m in layers]
    g = torch.Generator().manual_seed(5)
    before: list[torch.Tensor] = []
    for step in range(1, 6):
        x, y = torch.randn(32, 12, generator=g).cuda(), torch.randint(0, 4, (32,), generator=g).cuda()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 5:
            before = [m.mask_dense().clone() for m in layers]
        dst.on_step_end(step, model, opt)
    for m, old, n in zip(layers, before, nnz):
        grown = m.mask_dense() & ~old
        assert m.nnz == n and grown.any()
        weight = m.weight if backend == "masked" else m.dense_weight()
        assert torch.all(weight.detach()[grown] == 0)


@pytest.mark.parametrize("model", ["lenet300", "lenet5"])
def test_a_cuda_run_repeats_exactly_and_its_result_is_the_cpu_runs_within_noise(tmp_path: Path, model: str) -> None:
    args = ["train", "--model", model, "--topology", "random:density=0.1", *QUICK]
    assert main([*args, "--device", "cuda", "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--device", "cuda", "--out", str(tmp_path / "b")]) == 0
    assert main([*args, "--device", "cpu", "--out", str(tmp_path / "c")]) == 0
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in "abc"]
    assert summaries[0]["device"].startswith("cuda") and summaries[2]["device"] == "cpu"
    assert (tmp_path / "a" / "metrics.jsonl").read_bytes() == (tmp_path / "b" / "metrics.jsonl").read_bytes()
    assert abs(summaries[0]["final_test_accuracy"] - summaries[2]["final_test_accuracy"]) < 0.05
    assert main(["inspect", str(tmp_path / "a")]) == 0  # a CUDA run inspects on the CPU
