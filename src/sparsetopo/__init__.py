"""sparsetopo: build, train and study sparse neural network topologies."""

__version__ = "0.1.0"
