"""Datasets: strict parsing, data roots, verification and the downloader (over loopback only)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import shutil
import tarfile
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sparsetopo.cli import main
from sparsetopo.data import load_dataset, load_raw
from sparsetopo.data.download import download
from sparsetopo.data.formats import parse_cifar_binary, parse_idx_images, parse_idx_labels
from sparsetopo.data.registry import MNIST, DataFile, DatasetSpec, get_spec
from sparsetopo.data.files import resolve_root, verify_dataset
from sparsetopo.errors import ConfigError, DataError


def idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return b"\x00\x00\x08\x03" + np.array([n, h, w], ">u4").tobytes() + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return b"\x00\x00\x08\x01" + np.array([len(labels)], ">u4").tobytes() + labels.astype(np.uint8).tobytes()


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ----------------------------------------------------------------------------------------- parsers


def test_idx_round_trip_and_strict_errors() -> None:
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    assert np.array_equal(parse_idx_images(idx_images(images), "x"), images)
    data = idx_images(images)
    with pytest.raises(DataError, match=r"^f: truncated"):
        parse_idx_images(data[:-5], "f")
    with pytest.raises(DataError, match=r"^f: wrong magic number 0x00000801"):
        parse_idx_images(idx_labels(np.zeros(3)), "f")
    with pytest.raises(DataError, match=r"^f: wrong sizes \(2, 28, 28\), expected \(N, 32, 32\)"):
        parse_idx_images(data, "f", 32, 32)
    with pytest.raises(DataError, match="trailing bytes"):
        parse_idx_images(data + b"x", "f")
    with pytest.raises(DataError, match="label 12 out of range"):
        parse_idx_labels(idx_labels(np.array([1, 12])), "f")


def test_cifar_binary_record_checks() -> None:
    record = bytes([3]) + bytes(range(256)) * 12
    images, labels = parse_cifar_binary(record * 2, "b")
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [3, 3]
    with pytest.raises(DataError, match="not a whole number of 3073-byte"):
        parse_cifar_binary(record[:-1], "b")


# ----------------------------------------------------------------------------------------- real data


def test_mnist_loads_as_normalised_tensors(data_root: Path) -> None:
    data = load_dataset("mnist", data_root)
    assert data.train.images.shape == (60000, 1, 28, 28) and data.test.images.shape == (10000, 1, 28, 28)
    assert data.train.labels.dtype.is_floating_point is False and int(data.train.labels.max()) == 9
    assert abs(float(data.train.images.mean())) < 1e-3 and abs(float(data.train.images.std()) - 1) < 1e-3
    assert np.bincount(data.test.labels.numpy()).tolist()[:2] == [980, 1135]  # the official test split


def test_validation_split_is_carved_from_training(data_root: Path) -> None:
    data = load_dataset("mnist", data_root, validation=5000, split_seed=1)
    assert len(data.train) == 55000 and data.validation is not None and len(data.validation) == 5000
    again = load_dataset("mnist", data_root, validation=5000, split_seed=1)
    assert np.array_equal(data.validation.labels.numpy(), again.validation.labels.numpy())
    with pytest.raises(ConfigError, match="validation size 60000"):
        load_dataset("mnist", data_root, validation=60000)


def test_cifar10_binary_batches(data_root: Path) -> None:
    raw = load_raw("cifar10", data_root)
    assert raw.train_images.shape == (50000, 3, 32, 32) and raw.test_images.shape == (10000, 3, 32, 32)
    assert np.bincount(raw.test_labels).tolist() == [1000] * 10


def test_cifar10_python_pickle_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    expected = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        expected[name] = (data, labels)
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": labels, b"batch_label": b"x"}))
    raw = load_raw("cifar10", tmp_path)
    assert raw.train_images.shape == (20, 3, 32, 32)
    assert np.array_equal(raw.test_images.reshape(4, -1), expected["test_batch"][0])
    assert raw.test_labels.tolist() == expected["test_batch"][1]


def test_fashion_mnist_found_in_debian_folder_or_root(data_root: Path) -> None:
    raw = load_raw("fashion-mnist", data_root)
    assert raw.train_images.shape == (60000, 1, 28, 28) and raw.test_labels.shape == (10000,)
    assert all(s.status == "ok" for s in verify_dataset(get_spec("fashion-mnist"), data_root))


def test_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPARSETOPO_DATA", str(tmp_path / "env"))
    assert resolve_root(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_root(None) == tmp_path / "env"
    monkeypatch.delenv("SPARSETOPO_DATA")
    assert resolve_root(None) == Path.home() / ".cache" / "sparsetopo" / "data"
    with pytest.raises(ConfigError, match="unknown dataset 'svhn'"):
        get_spec("svhn")


# ----------------------------------------------------------------------------------------- damaged files


@pytest.fixture()
def mnist_copy(tmp_path: Path, data_root: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(data_root / "mnist", root / "mnist")
    return root


def test_truncated_mnist_one_line_error_exit_2_and_nothing_written(mnist_copy: Path, capsys, tmp_path: Path) -> None:
    target = mnist_copy / "mnist" / "t10k-labels-idx1-ubyte.gz"
    payload = gzip.decompress(target.read_bytes())
    target.unlink()
    (mnist_copy / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(payload[:5000])
    os.chmod(mnist_copy / "mnist", 0o555)
    before = tree(mnist_copy)
    try:
        code = main(["train", "--data-dir", str(mnist_copy), "--steps", "1", "--out", str(tmp_path / "run"), "--quiet"])
    finally:
        os.chmod(mnist_copy / "mnist", 0o755)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "t10k-labels-idx1-ubyte: truncated" in err
    assert tree(mnist_copy) == before


def test_corrupt_gzip_and_checksum_mismatch_reported_by_verify(mnist_copy: Path, capsys) -> None:
    gz = mnist_copy / "mnist" / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:1000])
    labels = mnist_copy / "mnist" / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(labels.read_bytes()))
    payload[100] = (payload[100] + 1) % 10
    labels.write_bytes(gzip.compress(bytes(payload)))
    code = main(["data", "verify", "--dataset", "mnist", "--data-dir", str(mnist_copy)])
    out = capsys.readouterr().out
    assert code == 1
    assert "corrupt" in out and "truncated gzip stream" in out and "checksum mismatch" in out
    assert out.count("ok ") == 2


# ----------------------------------------------------------------------------------------- downloader


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture()
def serve():
    servers = []

    def start(directory: Path) -> str:
        handler = functools.partial(_Quiet, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_download_from_mirror_verifies_then_loads(tmp_path: Path, data_root: Path, serve) -> None:
    mirror = tmp_path / "mirror"
    shutil.copytree(data_root / "mnist", mirror / "mnist")
    url = serve(mirror)
    root = tmp_path / "fresh"
    written = download(MNIST, root, mirror=url, progress=False)
    assert sorted(p.name for p in written) == sorted(f"{f.name}.gz" for f in MNIST.files)
    assert all(s.status == "ok" for s in verify_dataset(MNIST, root))
    assert tree(root / "mnist") == sorted(f"{f.name}.gz" for f in MNIST.files)  # no temp files left
    assert download(MNIST, root, mirror=url, progress=False) == []  # nothing missing: nothing fetched


def test_download_refuses_bad_checksum_and_keeps_nothing(tmp_path: Path, data_root: Path, serve, monkeypatch) -> None:
    mirror = tmp_path / "mirror"
    shutil.copytree(data_root / "mnist", mirror / "mnist")
    bad = mirror / "mnist" / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(gzip.decompress(bad.read_bytes())[:-1] + b"\x07"))
    monkeypatch.setenv("SPARSETOPO_MIRROR", serve(mirror))
    root = tmp_path / "fresh"
    with pytest.raises(DataError, match="checksum mismatch for t10k-labels-idx1-ubyte"):
        download(MNIST, root, progress=False)
    assert not (root / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    assert not [p for p in (root / "mnist").iterdir() if p.name.startswith(".")]


def test_download_http_error_names_url(tmp_path: Path, serve) -> None:
    url = serve(tmp_path)  # an empty mirror
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: download failed: HTTP 404"):
        download(MNIST, tmp_path / "fresh", mirror=url, progress=False)


def test_download_without_network_says_how_to_use_local_files(tmp_path: Path) -> None:
    import socket
    with socket.socket() as s:  # a loopback port nobody listens on: the connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match=r"download failed: .*set \$SPARSETOPO_DATA.*data verify"):
        download(MNIST, tmp_path / "fresh", mirror=f"http://127.0.0.1:{port}/", progress=False)


def test_download_official_archive_layout(tmp_path: Path, serve) -> None:
    """A dataset shipped as one archive (like CIFAR-10's) is fetched, each member verified, then written."""
    members = {"a.bin": b"alpha" * 100, "b.bin": b"beta" * 100}
    spec = DatasetSpec(
        name="toy", folder="toy-bin",
        files=tuple(DataFile(n, hashlib.sha256(d).hexdigest(), "train_batch") for n, d in members.items()),
        default_mirror="", archive="toy.tar.gz", archive_prefix="toy-bin/",
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo("toy-bin/" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    site = tmp_path / "site"
    site.mkdir()
    (site / "toy.tar.gz").write_bytes(buffer.getvalue())
    spec = replace(spec, default_mirror=serve(site))
    root = tmp_path / "root"
    download(spec, root, progress=False)
    assert (root / "toy-bin" / "a.bin").read_bytes() == members["a.bin"]
    (site / "toy.tar.gz").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (root / "toy-bin" / "b.bin").unlink()
    with pytest.raises(DataError, match="corrupt or truncated archive"):
        download(spec, root, progress=False)
    assert not (root / "toy-bin" / "b.bin").exists()


def test_unwritable_root_with_missing_files_is_refused_clearly(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data root's folder would go")
    with pytest.raises(DataError, match="cannot write the missing files here"):
        download(MNIST, blocker, progress=False)
