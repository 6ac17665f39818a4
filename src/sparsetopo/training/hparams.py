"""The hyperparameter groups of a training run (``train``, and the first three groups of every other kind).

The framework (flags, TOML, canonical form) is :mod:`sparsetopo.desc`; the topology spec and the width
scale are :mod:`sparsetopo.topology.spec`'s typed values. Everything here changes a run's numbers and so
is part of its identity.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from sparsetopo.data.augment import AUGMENTS
from sparsetopo.desc.factories import registered_or_factory
from sparsetopo.desc.hparams import Hparams, fraction_list, hp, non_negative, positive
from sparsetopo.errors import ConfigError
from sparsetopo.topology.spec import Scale, TopologySpec, parse_scale, parse_topology

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class ModelArgs:
    """The keyword arguments of a model factory, by their canonical JSON text."""

    text: str

    def __str__(self) -> str:
        return self.text

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(json.loads(self.text))


def parse_model_args(value: Any) -> ModelArgs:
    """``--model-args`` as JSON (``{"width": 64}``), TOML keys (``width = 64``) or, from a TOML file, a table."""
    if isinstance(value, ModelArgs):
        return value
    if isinstance(value, dict):
        data = value
    else:
        text = str(value).strip()
        try:
            data = json.loads(text)
        except ValueError:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError:
                raise ConfigError(f"--model-args {value!r}: give JSON ({{\"width\": 64}}) or TOML keys "
                                  "(width = 64)") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"--model-args {value!r}: must be a table of keyword arguments")
    try:
        return ModelArgs(json.dumps(data, sort_keys=True, separators=(",", ":")))
    except TypeError:
        raise ConfigError(f"--model-args {value!r}: values must be numbers, strings, booleans, lists or tables") from None


REGISTERED_MODELS = ("lenet300", "lenet5", "resnet20")
REGISTERED_DATASETS = ("mnist", "fashion-mnist", "cifar10")


def parse_dataset(value: Any) -> str:
    return registered_or_factory(value, "--dataset", REGISTERED_DATASETS, "dataset")


def parse_model(value: Any) -> str:
    return registered_or_factory(value, "--model", REGISTERED_MODELS, "model")


def parse_widths(value: Any) -> tuple[int, ...]:
    """``300,100`` (or a list of integers) as a tuple of positive integers."""
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        parts: Any = value
    else:
        try:
            if isinstance(value, (list, tuple)):
                parts = tuple(int(v) for v in value if not isinstance(v, bool) and float(v).is_integer())
                if len(parts) != len(value):
                    raise ValueError
            else:
                parts = tuple(int(v) for v in str(value).split(","))
        except (TypeError, ValueError):
            parts = ()
    if not parts or any(p <= 0 for p in parts):
        raise ConfigError(f"--widths {value!r} is invalid: must be comma-separated positive integers, e.g. 300,100")
    return tuple(parts)


INIT_KINDS = ("sparse", "dense", "rewind")
MAX_THREADS = 1024


def _thread_count(value: Any) -> str | None:
    if value is None or 1 <= value <= MAX_THREADS:
        return None
    return f"must be between 1 and {MAX_THREADS}"
FLOAT32_MAX = 3.4028234663852886e38  # weights, gradients and the optimiser's scalars are float32


def _in_float32(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    """``check``, and the value must fit the weights' float32 (a larger step size overflows in the update)."""
    def checked(value: Any) -> str | None:
        if value is not None and abs(value) > FLOAT32_MAX:
            return f"must be at most {FLOAT32_MAX:.3g} in size (the weights are float32)"
        return check(value)
    return checked


@dataclass(frozen=True)
class InitSpec:
    """A parsed ``--init``: ``sparse`` (fan-in of the actual connections), ``dense`` (framework default) or
    ``rewind:RUN[@STEP]`` (RUN's own weights at STEP, a directory or ``{run:ID}``)."""

    kind: str = "sparse"
    run: str = ""
    step: int = 0

    def __str__(self) -> str:
        if self.kind != "rewind":
            return self.kind
        return f"rewind:{self.run}" + (f"@{self.step}" if self.step else "")

    def ref_path(self) -> str | None:
        return self.run if self.kind == "rewind" else None

    def with_ref_path(self, path: str) -> InitSpec:
        return replace(self, run=path)


def parse_init(value: Any) -> InitSpec:
    if isinstance(value, InitSpec):
        return value
    text = str(value).strip()
    if text in ("sparse", "dense"):
        return InitSpec(text)
    if not text.startswith("rewind:"):
        raise ConfigError(f"--init {value!r}: use sparse, dense, rewind:RUN_DIR or rewind:RUN_DIR@STEP")
    run, _, step = text.removeprefix("rewind:").rpartition("@") if "@" in text else (text[7:], "", "")
    if not run.strip():
        raise ConfigError(f"--init {value!r}: use rewind:RUN_DIR or rewind:RUN_DIR@STEP")
    try:
        step_n = int(step) if step else 0
    except ValueError:
        raise ConfigError(f"--init {value!r}: STEP {step!r} is not an integer") from None
    if step_n < 0:
        raise ConfigError(f"--init {value!r}: STEP must be >= 0")
    return InitSpec("rewind", run.strip(), step_n)


DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed ``--device``: ``auto`` (CUDA, else MPS, else the CPU), ``cpu``, ``cuda[:N]`` or ``mps``. Its
    text (and so the run's name) is the kind only: which GPU of a kind a run used does not change its
    numbers."""

    kind: str = "auto"
    index: int | None = None

    def __str__(self) -> str:
        return self.kind

    @property
    def torch(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device(value: Any) -> DeviceSpec:
    if isinstance(value, DeviceSpec):
        return value
    kind, _, index = str(value).strip().partition(":")
    if kind not in DEVICE_KINDS or (index and (kind != "cuda" or not index.isdigit())):
        raise ConfigError(f"--device {value!r}: use auto, cpu, cuda, cuda:N or mps")
    return DeviceSpec(kind, int(index) if index else None)


def _mps_available() -> bool:
    import torch

    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(spec: DeviceSpec) -> DeviceSpec:
    """``auto`` made concrete on this machine; an accelerator that is not there is refused."""
    import torch

    if spec.kind == "cpu":
        return spec
    if spec.kind == "auto":
        if torch.cuda.is_available():
            return DeviceSpec("cuda", spec.index)
        if _mps_available():
            return DeviceSpec("mps")
        return DeviceSpec("cpu")
    if spec.kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible to this process (use --device cpu or auto)")
    if spec.kind == "cuda" and spec.index is not None and spec.index >= torch.cuda.device_count():
        raise ConfigError(f"--device cuda:{spec.index}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if spec.kind == "mps" and not _mps_available():
        raise ConfigError("--device mps: MPS is not available here (use --device cpu or auto)")
    return spec


@dataclass(frozen=True)
class DataHparams(Hparams):
    section: ClassVar[str] = "data"
    dataset: str = hp("mnist", "dataset: mnist, fashion-mnist, cifar10, or your own as package.module:factory "
                      "(returning a Dataset or (train_images, train_labels, test_images, test_labels))",
                      parse=parse_dataset, metavar="DATASET")
    batch_size: int = hp(100, "examples per training step", check=positive)
    data_seed: int | None = hp(None, "seed for the order of training examples (default: the same as --seed)")
    validation: int = hp(0, "examples held out of the training set for validation (0: none)", check=non_negative)
    augment: str = hp("none", "training-time augmentation: none, flip (mirror left-right at random) or crop-flip "
                      "(pad 4 pixels, crop at random, then flip: the CIFAR recipe of He et al.)", choices=AUGMENTS)


@dataclass(frozen=True)
class ModelHparams(Hparams):
    section: ClassVar[str] = "model"
    model: str = hp("lenet300", "model: lenet300, lenet5, resnet20, or a model of your own as package.module:factory "
                    "(called as factory(input_shape=..., num_classes=..., **model_args); see docs/own-model.md)",
                    parse=parse_model, metavar="MODEL")
    model_args: ModelArgs | None = hp(None, "keyword arguments of a model factory, as JSON or TOML keys",
                                      parse=parse_model_args, metavar="ARGS")
    seed: int = hp(0, "seed for weight initialisation (and for random topologies)")
    widths: tuple[int, ...] | None = hp(None, "hidden widths, comma-separated (lenet300: 300,100; lenet5: 20,50,500; "
                                        "resnet20: 16,32,64)",
                                        parse=parse_widths, metavar="W1,W2")
    topology: TopologySpec = hp(TopologySpec(), "topology spec: dense | random[:density=D][,mode=bernoulli|exact|"
                                "fanin][,seed=N][,distribution=uniform|erk] | radix:systems=10x10,kron=8x3x1[,trim=16] | "
                                "radix:density=D | radix:auto | file:PATH",
                                parse=parse_topology, metavar="SPEC")
    scale: Scale | None = hp(None, "width scaling: connections:K (widen xK at density 1/K) or neurons:F (density F)",
                             parse=parse_scale, metavar="KIND:VALUE")
    init: InitSpec = hp(InitSpec(), "initialisation of sparse layers: sparse (fan-in of the actual connections), "
                        "dense (framework default), rewind:RUN_DIR[@STEP] (a pruned run's own early weights)",
                        parse=parse_init, metavar="INIT")
    backend: str = hp("auto", "sparse compute backend: auto | masked | sparse", choices=("auto", "masked", "sparse"))


@dataclass(frozen=True)
class TrainHparams(Hparams):
    section: ClassVar[str] = "training"
    optimizer: str = hp("sgd", "optimiser", choices=("sgd", "adam"))
    lr: float = hp(0.1, "learning rate", check=_in_float32(positive))
    momentum: float = hp(0.0, "SGD momentum", check=_in_float32(non_negative))
    nesterov: bool = hp(False, "Nesterov momentum (SGD with momentum > 0)")
    weight_decay: float = hp(0.0, "L2 weight decay", check=_in_float32(non_negative))
    schedule: str = hp("constant", "learning-rate schedule", choices=("constant", "step", "cosine"))
    milestones: str = hp("0.5,0.75", "step schedule: fractions of the budget where lr is multiplied by --gamma",
                         check=fraction_list)
    gamma: float = hp(0.1, "step schedule: factor at each milestone", check=_in_float32(positive))
    epochs: float | None = hp(None, "training budget in epochs (default: 20 when --steps is not given)", check=positive)
    steps: int | None = hp(None, "training budget in steps (instead of --epochs)", check=positive)
    eval_every: int | None = hp(None, "evaluate on the test set every N steps (default: once per epoch)", check=positive)
    device: DeviceSpec = hp(DeviceSpec(), "device: auto (CUDA, else MPS, else the CPU), cpu, cuda[:N] or mps. An "
                            "accelerator changes the numbers, so its kind is part of the run's name (the CPU is "
                            "left out, so CPU runs keep their names)", parse=parse_device, metavar="DEVICE",
                            unnamed=("cpu",))
    threads: int | None = hp(None, "CPU threads of the run (default: $OMP_NUM_THREADS, else every core this process "
                             "may use). The thread count changes the floating-point sums, so it is part of the run's "
                             "name", check=_thread_count)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs is not None and self.steps is not None:
            raise ConfigError(f"give a budget in --epochs ({self.epochs}) or --steps ({self.steps}), not both")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ConfigError("--nesterov needs --optimizer sgd and --momentum > 0")

    def total_steps(self, steps_per_epoch: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, round((self.epochs if self.epochs is not None else 20.0) * steps_per_epoch))


def _open_fraction(value: Any) -> str | None:
    return None if value is None or 0 < value < 1 else "must be strictly between 0 and 1"


def _budget_fraction(value: Any) -> str | None:
    return None if value is None or 0 < value <= 1 else "must be a fraction of the budget in (0, 1]"


@dataclass(frozen=True)
class DSTHparams(Hparams):
    """Dynamic sparse training: the connections of the sparse layers change while training."""

    section: ClassVar[str] = "dst"
    dst: str = hp("none", "dynamic sparse training: none (a fixed structure), set (drop the smallest weights, grow at "
                  "random) or rigl (grow where the dense gradient is largest)", choices=("none", "set", "rigl"))
    dst_interval: int = hp(100, "steps between structure updates", check=positive)
    dst_fraction: float = hp(0.3, "fraction of each layer's connections replaced at the first update (cosine decay "
                             "to 0 at --dst-end)", check=_open_fraction)
    dst_end: float = hp(0.75, "fraction of the budget after which the structure stays fixed", check=_budget_fraction)


TRAIN_GROUPS: tuple[type, ...] = (DataHparams, ModelHparams, TrainHparams, DSTHparams)
