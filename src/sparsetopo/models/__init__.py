"""Models by name: ``build_model("lenet300", input_shape, num_classes, ...)``.

Every weight layer has a stable name (``fc1``, ``conv2``, ...); passing a mask for a layer name replaces
that layer by its sparse equivalent from :mod:`sparsetopo.nn` with the mask given in PyTorch weight layout.
"""

from __future__ import annotations

from sparsetopo.models.lenet import LeNet5, LeNet300, ModelArch
from sparsetopo.models.registry import MODELS, build_model, instantiate, model_arch

__all__ = ["MODELS", "LeNet300", "LeNet5", "ModelArch", "build_model", "instantiate", "model_arch"]
