"""What each dataset is made of: file names, checksums, download sources, normalisation."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset, as it lies uncompressed in the dataset folder (a `.gz` beside it is fine too)."""

    name: str
    sha256: str
    role: str  # e.g. "train_images", "test_labels", "train_batch"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str  # sub-folder of the data root
    files: tuple[DataFile, ...]
    default_mirror: str  # base URL the official files are fetched from
    archive: str | None  # when set, one archive holds all the files (else each file is fetched as NAME.gz)
    archive_prefix: str = ""  # folder inside the archive holding the files
    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    train_examples: int = 60000  # size of the official training split (before any held-out validation)
    mean: tuple[float, ...] = field(default=(0.0,))
    std: tuple[float, ...] = field(default=(1.0,))
    classes: tuple[str, ...] = ()


MNIST = DatasetSpec(
    name="mnist",
    folder="mnist",
    files=(
        DataFile("train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", "train_images"),
        DataFile("train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", "train_labels"),
        DataFile("t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", "test_images"),
        DataFile("t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", "test_labels"),
    ),
    default_mirror="https://ossci-datasets.s3.amazonaws.com/mnist/",
    archive=None,
    mean=(0.1307,),
    std=(0.3081,),
    classes=tuple(str(i) for i in range(10)),
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    folder="fashion-mnist",
    files=(
        DataFile("train-images-idx3-ubyte", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", "train_images"),
        DataFile("train-labels-idx1-ubyte", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", "train_labels"),
        DataFile("t10k-images-idx3-ubyte", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", "test_images"),
        DataFile("t10k-labels-idx1-ubyte", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", "test_labels"),
    ),
    default_mirror="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    archive=None,
    mean=(0.2860,),
    std=(0.3530,),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
)

CIFAR10 = DatasetSpec(
    name="cifar10",
    folder="cifar-10-batches-bin",
    files=(
        DataFile("data_batch_1.bin", "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5", "train_batch"),
        DataFile("data_batch_2.bin", "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed", "train_batch"),
        DataFile("data_batch_3.bin", "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67", "train_batch"),
        DataFile("data_batch_4.bin", "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48", "train_batch"),
        DataFile("data_batch_5.bin", "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add", "train_batch"),
        DataFile("test_batch.bin", "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b", "test_batch"),
    ),
    default_mirror="https://www.cs.toronto.edu/~kriz/",
    archive="cifar-10-binary.tar.gz",
    archive_prefix="cifar-10-batches-bin/",
    input_shape=(3, 32, 32),
    train_examples=50000,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST, FASHION_MNIST, CIFAR10)}
ALIASES = {"fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar_10": "cifar10"}


def get_spec(name: str) -> DatasetSpec:
    from sparsetopo.errors import ConfigError

    key = ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[key]
