"""The Sparse DNN Graph Challenge: its file formats, RadiX-Net networks, inputs from MNIST, and inference.

>>> from sparsetopo.challenge import load_network, load_inputs_file, infer
>>> net = load_network(1024, 120, "/data")                                  # parsed once, then cached
>>> x = load_inputs_file("/data/graph-challenge/sparse-images-1024-first1200.tsv.gz", 1024)
>>> infer(net, x).categories[:3]                                            # 1-based surviving inputs
array([287, 295, 386])
"""

from sparsetopo.challenge.backends import BACKENDS, TimedRun, available_backends, rate, run_backend
from sparsetopo.challenge.engine import InferenceResult, infer
from sparsetopo.challenge.files import (
    inputs_path,
    load_inputs_file,
    load_network,
    load_truth,
    truth_path,
    weight_paths,
)
from sparsetopo.challenge.formats import (
    read_inputs,
    read_truth,
    read_weights,
    write_inputs,
    write_truth,
    write_weights,
)
from sparsetopo.challenge.generate import (
    MNIST_THRESHOLD,
    generate_layers,
    generate_network,
    images_to_inputs,
    mnist_inputs,
    write_mnist_inputs,
    write_network,
)
from sparsetopo.challenge.network import OFFICIAL_BIAS, ChallengeNetwork, default_bias
from sparsetopo.challenge.reference import categories, reference_infer

__all__ = [
    "BACKENDS", "ChallengeNetwork", "InferenceResult", "MNIST_THRESHOLD", "OFFICIAL_BIAS", "TimedRun",
    "available_backends", "categories", "default_bias", "generate_layers", "generate_network",
    "images_to_inputs", "infer", "inputs_path", "load_inputs_file", "load_network", "load_truth",
    "mnist_inputs", "rate", "read_inputs", "read_truth", "read_weights", "reference_infer", "run_backend",
    "truth_path", "weight_paths", "write_inputs", "write_mnist_inputs", "write_network", "write_truth",
    "write_weights",
]
