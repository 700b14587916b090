"""Getting the dataset files: found in a data folder, or fetched from their pinned upstream into the cache.

Downloads go through pooch, which streams each file to a temporary name beside its destination and only
moves it into place once the downloader returns; the downloader here stops at the manifest's size and
checks the manifest's pin (sha256, or git blob id) on the temporary file, so a mismatch, an oversized
answer, an HTTP error or a killed download leaves nothing where a run would read, and the next attempt
starts clean. One file lock per cache folder makes concurrent fetches (xdist workers, two CI jobs)
download each file once. Every file a run reads is checked again on the read (``harness.data.integrity``).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse
from urllib.request import url2pathname

from harness.core.errors import DataError
from harness.core.paths import OFFLINE_ENV, data_source_from_env, default_cache_dir, offline
from harness.data import integrity
from harness.data.integrity import shown
from harness.data.manifest import DataFile

DEFAULT_BASE = "https://raw.githubusercontent.com"
WEB_SCHEMES = ("http", "https")
LOCK_FILE = ".fetch.lock"
TIMEOUT_S = 60
# A download of a file whose size the manifest does not know stops here: no dataset the harness reads comes
# near it, and a mirror that sends without end must not fill the disk.
UNSIZED_LIMIT = 256 * 2**20


class DataFetchError(DataError):
    """A file could not be fetched or failed its hash check; the message is one line naming it."""


class DataLocationError(DataError):
    """A data folder, the cache folder or a data source that cannot be used as given. It stops a run (it is
    not a missing dataset that --allow-missing-data may skip): the command needs fixing, not a fetch."""


def _is_dir(path: str | Path) -> bool:
    try:
        return Path(path).is_dir()
    except (ValueError, OSError):  # an embedded NUL, a name too long: no such folder
        return False


def _exists(path: str | Path) -> bool:
    try:
        return Path(path).exists()
    except (ValueError, OSError):
        return False


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def data_cache() -> Path:
    """Where fetched files live: the user cache's ``data`` folder ($SAFETY_HARNESS_CACHE/data or
    ~/.cache/safety-harness/data)."""
    return default_cache_dir() / "data"


def resolve_source(source: str | None = None) -> str | None:
    """Where to fetch from: ``source``, else $SAFETY_HARNESS_DATA_SOURCE, else None (GitHub). An http(s) URL
    is a mirror; a local folder, or a ``file://`` URL naming one, is read as a folder. Any other scheme, or a
    folder that does not exist, is a :class:`DataLocationError`."""
    if source is not None and not source.strip():  # not "no source": fetching from upstream would surprise
        raise DataLocationError("data source '': empty (give a folder or an http(s) mirror URL, or leave the "
                                "option out to fetch from the upstream repositories)")
    source = source or data_source_from_env()
    if source is None:
        return None
    folder = source
    if "://" in source:
        scheme = source.split("://", 1)[0].lower()
        if scheme in WEB_SCHEMES:
            try:
                host = urlparse(source).netloc
            except ValueError as exc:  # "Invalid IPv6 URL" for http://[
                raise DataLocationError(f"data source {shown(source)}: not a usable URL ({exc})") from None
            if not host:  # each file would fail apart, as "No such file or directory: 'http:/...'"
                raise DataLocationError(f"data source {shown(source)}: no host in the URL (give {scheme}://HOST/path)")
            return source
        if scheme != "file":
            raise DataLocationError(f"data source {shown(source)}: unsupported URL scheme {(scheme + '://')!r} "
                                    "(give an http:// or https:// mirror, a local folder, or file:///path/to/folder)")
        try:
            parsed = urlparse(source)
        except ValueError as exc:  # e.g. "Invalid IPv6 URL" for file://[
            raise DataLocationError(f"data source {shown(source)}: not a usable file:// URL ({exc}); "
                                    "give file:///path/to/folder") from None
        if parsed.netloc not in ("", "localhost"):
            raise DataLocationError(f"data source {shown(source)}: a file:// URL must name a local folder "
                                    f"(file:///path), not host {parsed.netloc!r}")
        folder = url2pathname(parsed.path)
    if not _is_dir(folder):
        raise DataLocationError(f"data source {shown(source)}: no such folder (give a folder or an http(s) mirror URL)")
    return folder


def is_local(source: str) -> bool:
    """A resolved source (see :func:`resolve_source`) that is a folder rather than a mirror URL."""
    return "://" not in source


def find_in_folder(folder: Path, entry: DataFile) -> Path | None:
    """``entry`` in a folder holding the files by data-folder path, by upstream path (also under a mirror's
    <owner>/<repo>/<commit>/ prefix), or by file name anywhere below it (as the loaders accept)."""
    folder = Path(folder)
    for candidate in (folder / entry.name, folder / entry.path,
                      folder / entry.source.repo / entry.source.commit / entry.path):
        if candidate.is_file():
            return candidate
    if folder.is_dir():
        matches = sorted(folder.rglob(Path(entry.name).name))
        if matches:
            return matches[0]
    return None


def prepare_cache(dest: Path) -> Path:
    """Create the cache folder ``dest``; a :class:`DataLocationError` naming the obstacle when it cannot be
    (a regular file where a folder should be, no permission)."""
    try:
        Path(dest).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in Path(dest).parents if p.exists()), None)
        why = (f"{blocker} is a file, not a folder" if blocker is not None and not blocker.is_dir()
               else exc.strerror or str(exc))
        raise DataLocationError(f"data cache {dest} cannot be created ({why}); set SAFETY_HARNESS_CACHE to a "
                                "folder you can write") from None
    return Path(dest)


class _Cap(Exception):
    """The answer is larger than the manifest says the file is (raised inside the downloader)."""


def _download_capped(url: str, output_file: str, cap: int, progress: bool) -> None:
    """Stream ``url`` into ``output_file``, stopping as soon as more than ``cap`` bytes are announced or sent."""
    import requests

    with requests.get(url, stream=True, timeout=TIMEOUT_S) as response:
        response.raise_for_status()
        announced = response.headers.get("Content-Length", "")
        if announced.isdigit() and int(announced) > cap:
            raise _Cap(f"announces {int(announced):,} bytes")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=int(announced) if announced.isdigit() else None, unit="B", unit_scale=True,
                       leave=False, file=sys.stderr)
        written = 0
        try:
            with open(output_file, "wb") as out:
                for chunk in response.iter_content(chunk_size=1 << 16):
                    written += len(chunk)
                    if written > cap:
                        raise _Cap(f"sent more than {cap:,} bytes")
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()


class _CheckedDownload:
    """A pooch downloader: fetch one manifest file (by HTTP, or a copy from a local folder) to pooch's
    temporary name, at most its manifest size, and check its pin there, before pooch moves it into place.
    Its errors are not ones pooch retries: a wrong file stays wrong on a second try."""

    def __init__(self, entry: DataFile, progress: bool):
        self.entry, self.progress = entry, progress
        self.cap = entry.size if entry.size is not None else UNSIZED_LIMIT
        self.digest: tuple[str, str] | None = None  # (kind, hash) of the accepted file

    def __call__(self, url: str, output_file: str, pooch) -> None:
        name = self.entry.name
        try:
            if is_local(url):
                size = Path(url).stat().st_size
                if size > self.cap:
                    raise _Cap(f"is {size:,} bytes")
                shutil.copyfile(url, output_file)
            else:
                _download_capped(url, output_file, self.cap, self.progress)
        except _Cap as exc:
            raise DataFetchError(f"{name}: {url} {exc}, more than the manifest's {self.cap:,}; stopped there, "
                                 "nothing was installed") from None
        kind, expected = integrity.pin(self.entry)
        got = integrity.content_hash(Path(output_file), kind)
        if got != expected:
            raise DataFetchError(f"{name}: {kind} mismatch for {url}: expected {expected}, got {got}; "
                                 "nothing was installed")
        self.digest = (kind, got)


def _remove_stale_temporaries(dest: Path) -> None:
    """pooch's temporary files (``tmp*``) that a killed download left behind. Called under the lock, so
    none of them belongs to a download still running."""
    for tmp in Path(dest).rglob("tmp*"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)


def fetch(entries: list[DataFile], *, dest: Path | None = None, source: str | None = None,
          notify: Callable[[str], None] = _stderr, progress: bool = False, retries: int = 1) -> list[Path]:
    """Install ``entries`` under ``dest`` (default: the user cache) from ``source`` (a mirror base URL, a
    local folder or a file:// URL; default $SAFETY_HARNESS_DATA_SOURCE, else GitHub at the pinned commits).
    Files already there with their pinned content are kept; a changed one is fetched again. Returns their
    paths; raises :class:`DataFetchError` (or :class:`DataLocationError` for an unusable source or cache)."""
    from filelock import FileLock, Timeout

    if not entries:
        return []
    dest = Path(dest) if dest is not None else data_cache()
    source = resolve_source(source)
    if source is None and offline():
        names = " ".join(e.name for e in entries[:3]) + (" ..." if len(entries) > 3 else "")
        raise DataFetchError(f"cannot fetch {names}: {OFFLINE_ENV} is set and no --source is given")
    lock = FileLock(str(prepare_cache(dest) / LOCK_FILE))
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:  # said, so that a second process waiting here does not look hung
            notify(f"waiting for another process fetching into {dest}")
            lock.acquire()
    except OSError as exc:
        raise DataLocationError(f"data cache {dest} cannot be used ({exc.strerror or exc}); set "
                                "SAFETY_HARNESS_CACHE to a folder you can write") from None
    try:
        _remove_stale_temporaries(dest)
        return [_fetch_one(entry, dest, source, notify, progress, retries) for entry in entries]
    finally:
        lock.release()


def _fetch_one(entry: DataFile, dest: Path, source: str | None, notify, progress: bool, retries: int) -> Path:
    import pooch

    target = dest / entry.name
    if target.is_file():
        if integrity.mismatch(entry, target) is None:
            return target  # present and verified (or fetched before by another process holding the lock)
        target.unlink()  # changed since it was fetched; pooch keeps a file it has no hash for, so remove it
    if source is not None and is_local(source):
        found = find_in_folder(Path(source), entry)
        if found is None:
            raise DataFetchError(f"{entry.name}: not found in --source folder {source} "
                                 f"(looked for {entry.name}, {entry.path} and {Path(entry.name).name} below it)")
        url, retries, origin = str(found), 0, str(found)
    else:
        url = entry.url(source or DEFAULT_BASE)
        origin = f"{entry.source.repo}@{entry.source.commit[:8]} ({source or DEFAULT_BASE})"
    notify(f"fetching {entry.name} from {origin}, {entry.licence}")
    pooch.get_logger().setLevel("WARNING")  # this module says what it fetches, once
    # No hash in pooch's registry: the downloader checks the pin itself (pooch knows no git blob ids).
    store = pooch.create(path=dest, base_url="", registry={entry.name: None}, urls={entry.name: url},
                         retry_if_failed=retries)
    download = _CheckedDownload(entry, progress)
    try:
        store.fetch(entry.name, downloader=download)
    except OSError as exc:  # requests' errors are OSErrors too
        raise DataFetchError(f"{entry.name}: cannot fetch {url}: {_reason(exc)}") from None
    integrity.remember(target, *download.digest)  # the run's read of the new file need not hash it again
    return target


def _reason(exc: OSError) -> str:
    """The useful end of a requests/urllib3 error, on one line."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    text = " ".join(str(exc).split())
    for marker in ("Connection refused", "Name or service not known", "timed out", "IncompleteRead",
                   "Connection broken", "No route to host", "Temporary failure in name resolution"):
        if marker in text:
            return marker
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return text[:200]


def verify(entry: DataFile, path: Path) -> str:
    """``verified`` or ``MISMATCH (sha256 ..., expected ...)`` (or git blob, for a file pinned by its blob id)."""
    found = integrity.mismatch(entry, path)
    return "verified" if found is None else f"MISMATCH ({found[0]} {found[2]}, expected {found[1]})"


# -- the lookup order of a run ---------------------------------------------------------------------

def data_folder(data_dir: Path | None) -> Path | None:
    """``data_dir`` when it is an existing folder (None stays None); a :class:`DataLocationError` otherwise,
    rather than quietly going to the cache or the network for files the user meant to give."""
    if data_dir is None or _is_dir(data_dir):
        return data_dir
    what = "does not exist" if not _exists(data_dir) else "is not a folder"
    raise DataLocationError(f"data folder {shown(data_dir)} {what} (given by --data-dir, $SAFETY_HARNESS_DATA or data_dir "
                            "in [tool.safety-harness]); name an existing folder, or none to use the user cache")


def _find(name: str, data_dir: Path | None) -> tuple[Path, bool] | None:
    """(path, found in the cache) of a data-folder path, looked for in the data folder, else the cache."""
    folder = data_folder(data_dir)
    if folder is not None:
        direct = Path(folder) / name
        if direct.is_file():
            return direct, False
        matches = sorted(Path(folder).rglob(Path(name).name))
        if matches:
            return matches[0], False
    cached = data_cache() / name
    return (cached, True) if cached.is_file() else None


def locate(name: str, data_dir: Path | None) -> Path | None:
    """A data-folder path found in the configured data folder (--data-dir > $SAFETY_HARNESS_DATA >
    data_dir in [tool.safety-harness]), else in the user cache; None when in neither. Not checked: see
    :func:`verified_file` for a path to read."""
    found = _find(name, data_dir)
    return None if found is None else found[0]


def verified_file(name: str, data_dir: Path | None, *, fetch_name: str | None = None) -> Path | None:
    """:func:`locate`, then, for a file of the manifest, its content checked against the pin (a
    :class:`~harness.data.integrity.DataIntegrityError` on a mismatch, telling to fetch ``fetch_name``).
    A name the manifest does not know is the user's own file and is returned as it is."""
    from harness.data.manifest import manifest

    found = _find(name, data_dir)
    if found is None:
        return None
    path, in_cache = found
    entry = manifest().get(name)
    return path if entry is None else integrity.check(entry, path, fetch_name=fetch_name, in_cache=in_cache)


def ensure_available(user: str, data_dir: Path | None, *, source: str | None = None,
                     notify: Callable[[str], None] = _stderr) -> None:
    """Fetch into the cache the manifest files that ``user`` (a suite name) reads and that are found
    neither in the data folder nor in the cache. Offline with no source, nothing is fetched: the caller
    reports what is missing."""
    from harness.data.manifest import manifest

    missing = [f for f in manifest().values() if user in f.used_by and locate(f.name, data_dir) is None]
    if not missing or (resolve_source(source) is None and offline()):
        return
    fetch(missing, dest=data_cache(), source=source, notify=notify)


def named_data(name: str, data_dir: Path | None, *, notify: Callable[[str], None] = _stderr,
               user_path: bool = True) -> Path | None:
    """A manifest file (by data-folder path or file name) or folder (``alpaca_libre``) named by a user who
    did not give an existing path: found in the data folder or cache (and checked against its pin), else
    fetched into the cache (honouring $SAFETY_HARNESS_DATA_SOURCE and $SAFETY_HARNESS_OFFLINE). None when
    the manifest has no such name. ``user_path=False``: ``name`` is a default of the caller's, never a path
    of the user's, so a file or folder of that name in the working directory does not stand in for it."""
    from harness.data.manifest import manifest

    if user_path and Path(name).exists():
        return None
    files = manifest().values()
    exact = [f for f in files if name in (f.name, f.name.rsplit("/", 1)[-1])]
    below = [f for f in files if f.name.startswith(name.rstrip("/") + "/")]
    if not exact and not below:
        return None
    if exact:
        found = verified_file(exact[0].name, data_dir)
        return found or fetch(exact[:1], dest=data_cache(), notify=notify)[0]
    folder = data_folder(data_dir)
    if folder is not None and (Path(folder) / name).is_dir():
        # The folder's manifest files are checked, and all must be there: a copy missing one would train on
        # the others, another mix for the same seed, without a word. Other files in it are the user's own.
        absent = [entry.name for entry in below if not (Path(folder) / entry.name).is_file()]
        if absent:
            raise DataLocationError(f"data folder {folder}: {name} lacks {absent[0]}"
                                    + (f" (and {len(absent) - 1} more)" if len(absent) > 1 else "")
                                    + f" of its {len(below)} pinned files; restore it, or move the folder aside "
                                    "and run `safety-harness data fetch`")
        for entry in below:
            integrity.check(entry, Path(folder) / entry.name)
        return Path(folder) / name
    for entry in below:
        if (data_cache() / entry.name).is_file():
            integrity.check(entry, data_cache() / entry.name, in_cache=True)
    fetch([f for f in below if locate(f.name, None) is None], dest=data_cache(), notify=notify)
    return data_cache() / name.rstrip("/")
