"""Inference backends behind one call: the numba engine, the scipy reference, and torch on CUDA."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from sparsetopo.challenge.engine import InferenceResult, infer, resolve_threads
from sparsetopo.challenge.network import ChallengeNetwork
from sparsetopo.challenge.reference import categories, reference_infer
from sparsetopo.errors import ConfigError, UserError

BACKENDS = ("numba", "scipy", "torch-cuda")


def cuda_available() -> bool:
    """True when torch is importable and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def available_backends() -> list[str]:
    """The backends usable here: numba and scipy always, torch-cuda when torch sees a CUDA device."""
    return ["numba", "scipy"] + (["torch-cuda"] if cuda_available() else [])


@dataclass
class TimedRun:
    result: InferenceResult
    seconds: float          # inference only: no file reading, no compilation
    threads: int            # cores the run used (for the per-core rate)
    backend: str


def run_backend(
    backend: str,
    network: ChallengeNetwork,
    inputs: sp.csr_array,
    *,
    threads: int | None = None,
    batch: int | None = None,
    dtype: str = "float32",
) -> TimedRun:
    """Run one backend and time the inference itself (the numba kernels are compiled beforehand)."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"dtype must be float32 or float64, got {dtype!r}")
    if backend == "numba":
        nthreads = resolve_threads(threads)
        warm = sp.csr_array(inputs)[:1]
        infer(network.subset(1), warm, threads=nthreads, dtype=dtype)    # compile / load the kernels
        start = time.perf_counter()
        result = infer(network, inputs, threads=nthreads, batch=batch, dtype=dtype)
        return TimedRun(result, time.perf_counter() - start, nthreads, backend)
    if backend == "scipy":
        if threads not in (None, 1):
            raise ConfigError(f"the scipy backend is single-threaded; --threads {threads} is not possible")
        start = time.perf_counter()
        y = reference_infer(inputs, network, dtype=dtype)
        seconds = time.perf_counter() - start
        return TimedRun(InferenceResult(categories(y), y.shape[0]), seconds, 1, backend)
    if not cuda_available():
        raise UserError("the torch-cuda backend needs a CUDA device, and torch sees none here")
    return run_torch(network, inputs, device="cuda", batch=batch, dtype=dtype)


def run_torch(network: ChallengeNetwork, inputs: sp.csr_array, *, device: str = "cuda", batch: int | None = None,
              dtype: str = "float32") -> TimedRun:
    """Dense activations (neurons x batch, transposed) times CSR ``W^T`` with torch on ``device``, dropping
    the inputs whose activations died every 8 layers. The ``torch-cuda`` backend runs this on the GPU.

    cuSPARSE adds terms in its own order, so values may differ from the reference in the last bit.
    """
    import torch

    dev = torch.device(device)
    tdt = torch.float32 if dtype == "float32" else torch.float64
    n = network.neurons
    mats = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        for l in range(network.n_layers):
            wt = sp.csr_array(network.layer(l).T)
            wt.sort_indices()
            mats.append(torch.sparse_csr_tensor(
                torch.from_numpy(wt.indptr.astype(np.int64)), torch.from_numpy(wt.indices.astype(np.int64)),
                torch.from_numpy(wt.data), size=(n, n), dtype=tdt, device=dev, check_invariants=True))
    x = sp.csr_array(inputs)
    n_in = x.shape[0]
    step = n_in if batch is None else max(1, batch)
    bias = torch.tensor(network.bias, dtype=tdt, device=dev)
    alive = np.zeros(n_in, dtype=bool)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for first in range(0, n_in, step):
        part = x[first:first + step]
        yt = torch.from_numpy(part.toarray().T.copy()).to(device=dev, dtype=tdt)     # neurons x rows
        ids = torch.arange(first, first + part.shape[0], device=dev)
        for l, wt in enumerate(mats):
            z = torch.sparse.mm(wt, yt)
            yt = torch.where(z != 0, (z + bias).clamp_(0, network.ymax), z)
            if l % 8 == 7 or l == len(mats) - 1:
                keep = (yt != 0).any(dim=0)
                yt, ids = yt[:, keep], ids[keep]
                if ids.numel() == 0:
                    break
        alive[ids.cpu().numpy()] = True
    sync()
    seconds = time.perf_counter() - start
    return TimedRun(InferenceResult(np.flatnonzero(alive) + 1, n_in), seconds, 1, f"torch-{dev.type}")


def rate(n_inputs: int, edges: int, seconds: float) -> float:
    """The challenge metric: inputs x network edges / inference time (edges per second)."""
    return n_inputs * edges / seconds if seconds > 0 else float("inf")
