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
from sparsetopo.data.files import resolve_root, verify_dataset
from sparsetopo.data.formats import parse_cifar_binary, parse_idx_images, parse_idx_labels
from sparsetopo.data.registry import MNIST, DataFile, DatasetSpec, get_spec
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


def refused_url() -> str:
    """A loopback URL nobody listens on: connecting is refused at once, as offline."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_download_without_network_says_how_to_use_local_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SPARSETOPO_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    from sparsetopo.data.files import default_root
    with pytest.raises(DataError, match=r"download failed: .*set \$SPARSETOPO_DATA.*data verify"):
        download(MNIST, default_root(), mirror=refused_url(), progress=False)


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


# ----------------------------------------------------------------------------------------- checksums on load


def tiny_spec(root: Path) -> DatasetSpec:
    """A four-file IDX dataset written (gzipped) into ``root/tiny``, with its true digests in the spec."""
    rng = np.random.default_rng(0)
    payloads = {"train-images-idx3-ubyte": idx_images(rng.integers(0, 256, (3, 28, 28))),
                "train-labels-idx1-ubyte": idx_labels(np.array([0, 1, 2])),
                "t10k-images-idx3-ubyte": idx_images(rng.integers(0, 256, (2, 28, 28))),
                "t10k-labels-idx1-ubyte": idx_labels(np.array([3, 4]))}
    (root / "tiny").mkdir(parents=True)
    for name, payload in payloads.items():
        (root / "tiny" / f"{name}.gz").write_bytes(gzip.compress(payload, mtime=0))
    roles = {"train-images": "train_images", "train-labels": "train_labels", "t10k-images": "test_images",
             "t10k-labels": "test_labels"}
    return DatasetSpec(name="tiny", folder="tiny", default_mirror="", archive=None, files=tuple(
        DataFile(n, hashlib.sha256(d).hexdigest(), roles[n.rsplit("-", 2)[0]]) for n, d in payloads.items()))


def test_load_refuses_a_flipped_pixel_in_a_regzipped_file(mnist_copy: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPARSETOPO_CACHE", str(tmp_path / "cache"))
    target = mnist_copy / "mnist" / "t10k-images-idx3-ubyte.gz"
    payload = bytearray(gzip.decompress(target.read_bytes()))
    payload[5000] ^= 0x01  # one pixel: same size, still a valid IDX file
    target.write_bytes(gzip.compress(bytes(payload), compresslevel=1))
    for _ in range(2):  # a mismatch is never remembered as checked
        with pytest.raises(DataError) as err:
            load_raw("mnist", mnist_copy)
        msg = str(err.value)
        assert msg.startswith(f"{target}: checksum mismatch: sha256 ") and "\n" not in msg
        assert "expected 0fa7898d509279e4" in msg and "sparsetopo data verify" in msg
        assert "sparsetopo data download --dataset mnist" in msg


def test_load_hashes_each_unchanged_file_only_once(tmp_path: Path, monkeypatch) -> None:
    import sparsetopo.data.files as files

    monkeypatch.setenv("SPARSETOPO_CACHE", str(tmp_path / "cache"))
    spec = tiny_spec(tmp_path / "root")
    calls: list[int] = []
    real = files.sha256
    monkeypatch.setattr(files, "sha256", lambda data: calls.append(len(data)) or real(data))
    raw = files.read_raw(spec, tmp_path / "root")
    assert raw.train_images.shape == (3, 1, 28, 28) and len(calls) == 4
    cache = tmp_path / "cache" / files.CHECKSUM_CACHE
    assert cache.is_file() and not [p for p in cache.parent.iterdir() if p.name.startswith(".")]
    files.read_raw(spec, tmp_path / "root")
    assert len(calls) == 4  # the second load re-hashes nothing
    labels = tmp_path / "root" / "tiny" / "t10k-labels-idx1-ubyte.gz"
    os.utime(labels, ns=(1, 1))  # a changed mtime: that file (only) is checked again
    files.read_raw(spec, tmp_path / "root")
    assert len(calls) == 5
    files.read_raw(spec, tmp_path / "root")
    assert len(calls) == 5
    cache.write_text("{ not json")  # a corrupt cache is ignored and rewritten
    files.read_raw(spec, tmp_path / "root")
    assert len(calls) == 9 and "mtime_ns" in cache.read_text()
    other = replace(spec, files=(replace(spec.files[0], sha256="0" * 64), *spec.files[1:]))
    with pytest.raises(DataError, match="checksum mismatch"):  # the expected digest is part of the key
        files.read_raw(other, tmp_path / "root")


# ----------------------------------------------------------------------------------------- before any work


def test_ensure_datasets_offline_raises_one_error_naming_every_dataset(tmp_path: Path, monkeypatch) -> None:
    import sparsetopo.data.files as files
    from sparsetopo.data import ensure_datasets

    monkeypatch.setattr(files, "SYSTEM_ROOTS", (tmp_path / "system",))
    root = tmp_path / "cache" / "sparsetopo" / "data"
    with pytest.raises(DataError) as err:
        ensure_datasets(["mnist", "cifar10", "MNIST"], root, mirror=refused_url())
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"dataset(s) mnist, cifar10 missing from data root {root} (from --data-dir; also searched "
                          f"{tmp_path / 'system'})")
    assert "mnist: http://127.0.0.1:" in msg and "cifar10: not tried once offline" in msg  # offline: tried once, not twice
    assert "pass a --data-dir that holds them" in msg
    assert f"`sparsetopo data download --dataset NAME --data-dir {root}` for each" in msg
    assert not (tmp_path / "cache").exists()  # no empty folders left behind


def test_ensure_datasets_accepts_present_and_system_folder_datasets(tmp_path: Path, data_root: Path,
                                                                    monkeypatch) -> None:
    import sparsetopo.data.files as files
    from sparsetopo.data import ensure_datasets

    ensure_datasets(["mnist", "cifar10"], data_root, mirror=refused_url())  # all there: nothing fetched
    monkeypatch.setattr(files, "SYSTEM_ROOTS", (data_root,))
    empty = tmp_path / "empty"
    ensure_datasets(["mnist"], empty, mirror=refused_url())  # found in the system folder
    assert not empty.exists()


def test_ensure_datasets_downloads_what_is_missing(tmp_path: Path, data_root: Path, serve, monkeypatch) -> None:
    import sparsetopo.data.files as files
    from sparsetopo.data import ensure_datasets

    monkeypatch.setattr(files, "SYSTEM_ROOTS", ())
    mirror = tmp_path / "mirror"
    shutil.copytree(data_root / "mnist", mirror / "mnist")
    ensure_datasets(["mnist"], tmp_path / "root", mirror=serve(mirror))
    assert tree(tmp_path / "root" / "mnist") == sorted(f"{f.name}.gz" for f in MNIST.files)


def test_failed_download_removes_the_folders_it_created(tmp_path: Path, serve) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(DataError, match="HTTP 404"):
        download(MNIST, existing / "a" / "b", mirror=serve(tmp_path / "nothing-here"), progress=False)
    assert tree(existing) == []  # a/, a/b/ and a/b/mnist/ are gone; the folder that was there stays
    with pytest.raises(DataError, match="download failed"):
        download(MNIST, existing, mirror=refused_url(), progress=False)
    assert existing.is_dir() and tree(existing) == []


def test_missing_file_message_names_the_path_and_where_the_root_came_from(mnist_copy: Path, monkeypatch) -> None:
    gone = mnist_copy / "mnist" / "t10k-labels-idx1-ubyte"
    (mnist_copy / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("SPARSETOPO_DATA", str(mnist_copy))
    with pytest.raises(DataError) as err:
        load_raw("mnist", download_missing=True, mirror=refused_url())
    msg = str(err.value)
    assert msg.startswith(f"{gone}: missing (data root {mnist_copy}, from $SPARSETOPO_DATA); http://127.0.0.1:")
    assert "set $SPARSETOPO_DATA" not in msg and "point $SPARSETOPO_DATA (or --data-dir) at a folder" in msg
    assert "\n" not in msg
    with pytest.raises(DataError) as err:
        load_raw("mnist", mnist_copy, download_missing=True, mirror=refused_url())
    assert f"(data root {mnist_copy}, from --data-dir)" in str(err.value)
    assert str(gone) in str(err.value) and "mnist/train-images" not in str(err.value)  # only the missing one
    assert "SPARSETOPO_DATA" not in str(err.value)
    monkeypatch.delenv("SPARSETOPO_DATA")
    monkeypatch.setenv("HOME", str(mnist_copy.parent / "home"))
    with pytest.raises(DataError, match=r"the default cache, as neither --data-dir nor \$SPARSETOPO_DATA is set"):
        load_raw("mnist", download_missing=True, mirror=refused_url())
    assert not (mnist_copy.parent / "home").exists()
