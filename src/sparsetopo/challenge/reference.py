"""The scipy reference: the challenge's inference written directly with sparse matrix products."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from sparsetopo.challenge.network import YMAX, ChallengeNetwork, canonical_layer
from sparsetopo.errors import ConfigError


def reference_infer(
    inputs: sp.csr_array,
    layers: ChallengeNetwork | Sequence[sp.csr_array],
    bias: float | None = None,
    *,
    ymax: float = YMAX,
    dtype: str | type = "float32",
) -> sp.csr_array:
    """Final activations ``Y_L`` of ``Y_{l+1} = min(max(Y_l W_l + b, 0), ymax)``, bias on nonzeros only.

    Every product is a CSR x CSR product with sorted indices, computed in ``dtype``: each output's terms are
    added in ascending input order. ``bias``/``ymax`` default to the network's when ``layers`` is a network;
    boolean layers get the challenge weight 1/16 (as in :meth:`ChallengeNetwork.from_layers`).
    """
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ConfigError(f"dtype must be float32 or float64, got {dtype}")
    if isinstance(layers, ChallengeNetwork):
        bias = layers.bias if bias is None else bias
        ymax = layers.ymax
        mats = (layers.layer(l) for l in range(layers.n_layers))
    else:
        if bias is None:
            raise ConfigError("give the bias when the layers are plain matrices")
        mats = (canonical_layer(w, l) for l, w in enumerate(layers))
    b = dt.type(bias)
    top = dt.type(ymax)
    y = sp.csr_array(inputs).astype(dt)
    y.sum_duplicates()
    y.eliminate_zeros()
    y.sort_indices()
    for w in mats:
        w = sp.csr_array(w).astype(dt)
        w.sort_indices()
        z = sp.csr_array(y @ w)
        z.eliminate_zeros()          # bias only where the product is nonzero
        z.data += b
        np.clip(z.data, dt.type(0), top, out=z.data)
        z.eliminate_zeros()
        z.sort_indices()
        y = z
    return y


def categories(y: sp.csr_array) -> np.ndarray:
    """1-based indices of the rows of ``y`` with any nonzero."""
    y = sp.csr_array(y)
    y.eliminate_zeros()
    return np.flatnonzero(np.diff(y.indptr) > 0) + 1
