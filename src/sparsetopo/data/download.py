"""Download the official dataset files (or a mirror's copy), verify them, and only then move them in place."""

from __future__ import annotations

import gzip
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from sparsetopo.data import files
from sparsetopo.data.files import (
    dataset_root,
    describe_origin,
    find_file,
    fix_advice,
    origin_of,
    resolve_root,
    root_origin,
    sha256,
)
from sparsetopo.data.registry import DataFile, DatasetSpec, get_spec
from sparsetopo.errors import DataError
from sparsetopo.fileio import atomic_write_bytes

CHUNK = 1 << 20


def mirror_url(mirror: str | None = None) -> str | None:
    """The mirror base URL: ``mirror`` if given, else ``$SPARSETOPO_MIRROR``, else None (official sources)."""
    value = mirror or os.environ.get("SPARSETOPO_MIRROR") or None
    return value.rstrip("/") + "/" if value else None


class FetchError(Exception):
    """A download that did not arrive: ``network`` is True when the host could not be reached at all."""

    def __init__(self, url: str, reason: str, network: bool) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason, self.network = url, reason, network


def _fetch(url: str, dest: Path, *, progress: bool) -> None:
    """Stream ``url`` into ``dest`` with a progress bar; a failure is a :class:`FetchError`."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - http(s) URLs from config
            total = int(response.headers.get("Content-Length") or 0) or None
            with open(dest, "wb") as out, tqdm(
                total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
                disable=not progress, leave=False,
            ) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            if total is not None and dest.stat().st_size != total:
                raise FetchError(url, f"truncated download: {dest.stat().st_size} of {total} bytes", False)
    except urllib.error.HTTPError as exc:
        raise FetchError(url, f"HTTP {exc.code} {exc.reason}", False) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise FetchError(url, str(reason), True) from None


def missing_files(spec: DatasetSpec, root: Path) -> list[DataFile]:
    """The files of ``spec`` that neither ``root`` nor a system data folder holds (see ``dataset_root``)."""
    where = dataset_root(spec, root)
    return [item for item in spec.files if find_file(where, spec, item) is None]


def _failed(spec: DatasetSpec, root: Path, missing: list[DataFile], exc: FetchError, origin: str) -> DataError:
    if len(missing) == len(spec.files) > 1:
        paths = f"{root / spec.folder} (all {len(missing)} files of {spec.name})"
    else:
        paths = ", ".join(str(root / spec.folder / item.name) for item in missing)
    return DataError(f"{paths}: missing (data root {root}, {describe_origin(origin)}); {exc.url}: download "
                     f"failed: {exc.reason}; copy the files there (plain or .gz), {fix_advice(origin)}; "
                     "`sparsetopo data verify` lists the files expected")


def _check(item: DataFile, payload: bytes, source: str) -> None:
    digest = sha256(payload)
    if digest != item.sha256:
        raise DataError(f"{source}: checksum mismatch for {item.name}: sha256 {digest}, expected {item.sha256}")


def _gunzip(data: bytes, source: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (EOFError, OSError) as exc:
        raise DataError(f"{source}: corrupt or truncated gzip download ({exc})") from None


def download(spec: DatasetSpec, root: Path, *, mirror: str | None = None, progress: bool | None = None,
             origin: str | None = None) -> list[Path]:
    """Fetch every missing file of ``spec`` into ``root/<folder>``; return the paths written.

    A mirror is laid out like a data root: ``MIRROR/<folder>/<file>.gz``. Without one, the official sources
    are used (per-file ``.gz`` downloads, or the dataset's single archive). Each file is downloaded into a
    temporary file, its decompressed SHA-256 checked, and only then renamed into place. Folders created for
    a download that kept nothing are removed again. ``origin`` (``--data-dir``, ``$SPARSETOPO_DATA`` or
    ``default``, see ``root_origin``) is where ``root`` came from, for the message when the download fails.
    """
    try:
        return _download(spec, root, mirror=mirror, progress=progress)
    except FetchError as exc:
        missing = [item for item in spec.files if find_file(root, spec, item) is None]
        raise _failed(spec, root, missing, exc, origin or origin_of(root)) from None


def _download(spec: DatasetSpec, root: Path, *, mirror: str | None, progress: bool | None) -> list[Path]:
    if progress is None:
        progress = sys.stderr.isatty()
    if all(find_file(dataset_root(spec, root), spec, item) for item in spec.files):
        return []
    missing = [item for item in spec.files if find_file(root, spec, item) is None]
    if not missing:
        return []
    folder = root / spec.folder
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        return _fetch_missing(spec, folder, missing, mirror=mirror, progress=progress)
    except BaseException:
        for path in created:  # nothing of a failed download is kept: drop the folders made for it
            try:
                path.rmdir()
            except OSError:
                break  # not empty (something was kept) or not ours to remove
        raise


def _fetch_missing(spec: DatasetSpec, folder: Path, missing: list[DataFile], *, mirror: str | None,
                   progress: bool) -> list[Path]:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-")
        probe.close()
    except OSError as exc:
        raise DataError(f"{folder}: cannot write the missing files here ({exc.strerror}); choose a writable --data-dir") from None
    base = mirror_url(mirror)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        tmpdir = Path(tmp)
        if base is None and spec.archive:
            archive = tmpdir / spec.archive
            url = spec.default_mirror + spec.archive
            _fetch(url, archive, progress=progress)
            payloads = _extract(archive, spec, missing, url)
            for item in missing:  # verify everything before writing anything
                _check(item, payloads[item.name], url)
            for item in missing:
                target = folder / item.name
                atomic_write_bytes(target, payloads[item.name])
                written.append(target)
            return written
        for item in missing:
            prefix = f"{base}{spec.folder}/" if base else spec.default_mirror
            url = f"{prefix}{item.name}.gz"
            tmp_gz = tmpdir / f"{item.name}.gz"
            _fetch(url, tmp_gz, progress=progress)
            _check(item, _gunzip(tmp_gz.read_bytes(), url), url)
            target = folder / f"{item.name}.gz"
            shutil.move(str(tmp_gz), target)  # same folder: an atomic rename
            written.append(target)
    return written


def _extract(archive: Path, spec: DatasetSpec, items: list[DataFile], url: str) -> dict[str, bytes]:
    wanted = {spec.archive_prefix + item.name: item.name for item in items}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    handle = tar.extractfile(member)
                    assert handle is not None
                    found[wanted[member.name]] = handle.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{url}: corrupt or truncated archive ({exc})") from None
    absent = sorted(set(wanted.values()) - set(found))
    if absent:
        raise DataError(f"{url}: archive lacks {', '.join(absent)}")
    return found


def ensure_datasets(names: Iterable[str], data_dir: str | os.PathLike[str] | None = None,
                    mirror: str | None = None, *, progress: bool | None = None) -> None:
    """Make sure every dataset in ``names`` has all its files under the data root (or a system data folder),
    downloading what is missing; otherwise raise one DataError naming every dataset still missing.

    Call it once before starting work that needs the datasets. After a failure to reach a host at all
    (offline), the remaining datasets are not tried: their downloads would fail the same way.
    """
    root = resolve_root(data_dir)
    origin = root_origin(data_dir)
    specs = list({spec.name: spec for spec in (get_spec(n) for n in names)}.values())
    failed: list[tuple[str, str]] = []
    offline: FetchError | None = None
    for spec in specs:
        if not missing_files(spec, root):
            continue
        if offline is not None:
            failed.append((spec.name, "not tried once offline"))
            continue
        try:
            _download(spec, root, mirror=mirror, progress=progress)
        except FetchError as exc:
            failed.append((spec.name, f"{exc.url}: {exc.reason}"))
            offline = exc if exc.network else None
        except DataError as exc:
            failed.append((spec.name, str(exc)))
    if not failed:
        return
    names_missing = ", ".join(name for name, _ in failed)
    systems = "".join(f"; also searched {p}" for p in files.SYSTEM_ROOTS)
    reasons = "; ".join(f"{name}: {reason}" for name, reason in failed)
    command = "sparsetopo data download --dataset " + ("NAME" if len(failed) > 1 else failed[0][0])
    command += f" --data-dir {root}" if origin == "--data-dir" else ""
    raise DataError(
        f"dataset(s) {names_missing} missing from data root {root} ({describe_origin(origin)}{systems}) "
        f"and not downloaded ({reasons}); copy their files into {root} (`sparsetopo data verify` "
        f"lists them), {fix_advice(origin)}, or with network access run `{command}`"
        + (" for each" if len(failed) > 1 else ""))

