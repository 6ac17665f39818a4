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
from pathlib import Path

from tqdm import tqdm

from sparsetopo.data.registry import DataFile, DatasetSpec
from sparsetopo.data.files import dataset_root, find_file, sha256
from sparsetopo.errors import DataError
from sparsetopo.fileio import atomic_write_bytes

CHUNK = 1 << 20


def mirror_url(mirror: str | None = None) -> str | None:
    """The mirror base URL: ``mirror`` if given, else ``$SPARSETOPO_MIRROR``, else None (official sources)."""
    value = mirror or os.environ.get("SPARSETOPO_MIRROR") or None
    return value.rstrip("/") + "/" if value else None


def _fetch(url: str, dest: Path, *, progress: bool) -> None:
    """Stream ``url`` into ``dest`` with a progress bar."""
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
                raise DataError(f"{url}: truncated download: {dest.stat().st_size} of {total} bytes")
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: download failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError(f"{url}: download failed: {reason} (without network access, copy the dataset's files "
                        "into a data root and pass --data-dir or set $SPARSETOPO_DATA; "
                        "`sparsetopo data verify` lists the files expected)") from None


def _check(item: DataFile, payload: bytes, source: str) -> None:
    digest = sha256(payload)
    if digest != item.sha256:
        raise DataError(f"{source}: checksum mismatch for {item.name}: sha256 {digest}, expected {item.sha256}")


def _gunzip(data: bytes, source: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (EOFError, OSError) as exc:
        raise DataError(f"{source}: corrupt or truncated gzip download ({exc})") from None


def download(spec: DatasetSpec, root: Path, *, mirror: str | None = None, progress: bool | None = None) -> list[Path]:
    """Fetch every missing file of ``spec`` into ``root/<folder>``; return the paths written.

    A mirror is laid out like a data root: ``MIRROR/<folder>/<file>.gz``. Without one, the official sources
    are used (per-file ``.gz`` downloads, or the dataset's single archive). Each file is downloaded into a
    temporary file, its decompressed SHA-256 checked, and only then renamed into place.
    """
    if progress is None:
        progress = sys.stderr.isatty()
    if all(find_file(dataset_root(spec, root), spec, item) for item in spec.files):
        return []
    missing = [item for item in spec.files if find_file(root, spec, item) is None]
    if not missing:
        return []
    folder = root / spec.folder
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

