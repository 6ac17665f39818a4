"""Sparse network topologies: exact RadiX-Nets, random sparse layers, and their analysis.

Pure numpy/scipy. A :class:`Topology` is a list of boolean ``scipy.sparse.csr_array`` layers, each
``(n_in, n_out)`` (input x output, the transpose of a PyTorch weight).
"""

from sparsetopo.topology.core import Topology, expand_kernel_mask, kernel_adjacency
from sparsetopo.topology.io import load_topology, save_topology
from sparsetopo.topology.radix import radix_net
from sparsetopo.topology.randomnets import MODES, random_equivalent, random_topology, relabel_units

__all__ = ["Topology", "radix_net", "random_topology", "random_equivalent", "expand_kernel_mask", "kernel_adjacency",
           "load_topology", "relabel_units", "save_topology", "MODES"]
