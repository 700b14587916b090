"""Getting the dataset files: found in a data folder, or fetched from their pinned upstream into the cache.

Downloads go through pooch, which streams each file to a temporary name beside its destination, checks
its sha256 and only then moves it into place: a mismatch, an HTTP error or a killed download leaves
nothing where a run would read it, and the next attempt starts clean. One file lock per cache folder
makes concurrent fetches (xdist workers, two CI jobs) download each file once.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Callable

from harness.data.manifest import DataFile
from harness.core.errors import DataError
from harness.core.paths import OFFLINE_ENV, data_source_from_env, default_cache_dir, offline  # noqa: F401  (offline: used by callers)

DEFAULT_BASE = "https://raw.githubusercontent.com"
RECORDED_FILE = ".recorded-sha256.json"  # hashes of files the manifest does not pin, recorded on first fetch
LOCK_FILE = ".fetch.lock"
TIMEOUT_S = 60


class DataFetchError(DataError):
    """A file could not be fetched or failed its hash check; the message is one line naming it."""


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def data_cache() -> Path:
    """Where fetched files live: the user cache's ``data`` folder ($SAFETY_HARNESS_CACHE/data or
    ~/.cache/safety-harness/data)."""
    return default_cache_dir() / "data"


def configured_source(source: str | None = None) -> str | None:
    return source or data_source_from_env()


def is_local(source: str) -> bool:
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


def recorded_hashes(dest: Path) -> dict[str, str]:
    path = Path(dest) / RECORDED_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); delete it to record the hashes again") from None


def expected_hash(entry: DataFile, dest: Path) -> str | None:
    return entry.sha256 or recorded_hashes(dest).get(entry.name)


def _copy_file(url: str, output_file: str, pooch) -> None:
    """A pooch downloader for a local folder: copies, so that the same hash check and atomic move apply."""
    shutil.copyfile(url, output_file)


def _remove_stale_temporaries(dest: Path) -> None:
    """pooch's temporary files (``tmp*``) that a killed download left behind. Called under the lock, so
    none of them belongs to a download still running."""
    for tmp in Path(dest).rglob("tmp*"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)


def fetch(entries: list[DataFile], *, dest: Path | None = None, source: str | None = None,
          notify: Callable[[str], None] = _stderr, progress: bool = False, retries: int = 1) -> list[Path]:
    """Install ``entries`` under ``dest`` (default: the user cache) from ``source`` (a mirror base URL or
    a local folder; default $SAFETY_HARNESS_DATA_SOURCE, else GitHub at the pinned commits). Files already
    there with the right hash are kept. Returns their paths; raises :class:`DataFetchError`."""
    from filelock import FileLock

    dest = Path(dest) if dest is not None else data_cache()
    source = configured_source(source)
    if source is None and offline():
        names = " ".join(e.name for e in entries[:3]) + (" ..." if len(entries) > 3 else "")
        raise DataFetchError(f"cannot fetch {names}: {OFFLINE_ENV} is set and no --source is given")
    if source is not None and is_local(source) and not Path(source).is_dir():
        raise DataFetchError(f"--source {source}: no such folder (give a folder or a mirror URL)")
    dest.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest / LOCK_FILE)):
        _remove_stale_temporaries(dest)
        return [_fetch_one(entry, dest, source, notify, progress, retries) for entry in entries]


def _fetch_one(entry: DataFile, dest: Path, source: str | None, notify, progress: bool, retries: int) -> Path:
    import pooch

    target = dest / entry.name
    known = expected_hash(entry, dest)
    if target.is_file() and (known is None or pooch.file_hash(str(target)) == known):
        return target  # present and verified (or fetched before by another process holding the lock)
    if source is not None and is_local(source):
        found = find_in_folder(Path(source), entry)
        if found is None:
            raise DataFetchError(f"{entry.name}: not found in --source folder {source} "
                                 f"(looked for {entry.name}, {entry.path} and {Path(entry.name).name} below it)")
        url, downloader, retries = str(found), _copy_file, 0
        origin = url
    else:
        url = entry.url(source or DEFAULT_BASE)
        downloader = pooch.HTTPDownloader(progressbar=progress, timeout=TIMEOUT_S)
        origin = f"{entry.source.repo}@{entry.source.commit[:8]} ({source or DEFAULT_BASE})"
    notify(f"fetching {entry.name} from {origin}, {entry.licence}")
    pooch.get_logger().setLevel("WARNING")  # this module says what it fetches, once
    store = pooch.create(path=dest, base_url="", registry={entry.name: f"sha256:{known}" if known else None},
                         urls={entry.name: url}, retry_if_failed=retries)
    try:
        store.fetch(entry.name, downloader=downloader)
    except ValueError as exc:  # pooch's hash mismatch; it deleted the download
        got = re.search(r"but got ([0-9a-f]{64})", str(exc))
        raise DataFetchError(f"{entry.name}: sha256 mismatch for {url}: expected {known}, got "
                             f"{got.group(1) if got else 'another hash'}; nothing was installed") from None
    except OSError as exc:  # requests' errors are OSErrors too
        raise DataFetchError(f"{entry.name}: cannot fetch {url}: {_reason(exc)}") from None
    if known is None:
        digest = pooch.file_hash(str(target))
        hashes = recorded_hashes(dest)
        hashes[entry.name] = digest
        (dest / RECORDED_FILE).write_text(json.dumps(hashes, indent=1, sort_keys=True), encoding="utf-8")
        notify(f"{entry.name}: sha256 {digest} recorded on first fetch (the manifest pins its commit, not its hash)")
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


def verify(entry: DataFile, path: Path, dest: Path | None = None) -> str:
    """``verified``, ``unpinned`` (no hash known yet) or ``MISMATCH (sha256 ...)``."""
    import pooch

    known = entry.sha256 or (recorded_hashes(dest).get(entry.name) if dest is not None else None)
    if not known:
        return "unpinned"
    digest = pooch.file_hash(str(path))
    return "verified" if digest == known else f"MISMATCH (sha256 {digest}, expected {known})"


# -- the lookup order of a run ---------------------------------------------------------------------

def locate(name: str, data_dir: Path | None) -> Path | None:
    """A data-folder path found in the configured data folder (--data-dir > $SAFETY_HARNESS_DATA >
    data_dir in [tool.safety-harness]), else in the user cache; None when in neither."""
    if data_dir is not None:
        direct = Path(data_dir) / name
        if direct.is_file():
            return direct
        if Path(data_dir).is_dir():
            matches = sorted(Path(data_dir).rglob(Path(name).name))
            if matches:
                return matches[0]
    cached = data_cache() / name
    return cached if cached.is_file() else None


def ensure_available(user: str, data_dir: Path | None, *, source: str | None = None,
                     notify: Callable[[str], None] = _stderr) -> None:
    """Fetch into the cache the manifest files that ``user`` (a suite name) reads and that are found
    neither in the data folder nor in the cache. Offline with no source, nothing is fetched: the caller
    reports what is missing."""
    from harness.data.manifest import manifest

    missing = [f for f in manifest().values() if user in f.used_by and locate(f.name, data_dir) is None]
    if not missing or (configured_source(source) is None and offline()):
        return
    fetch(missing, dest=data_cache(), source=source, notify=notify)


def named_data(name: str, data_dir: Path | None, *, notify: Callable[[str], None] = _stderr) -> Path | None:
    """A manifest file (by data-folder path or file name) or folder (``alpaca_libre``) named by a user who
    did not give an existing path: found in the data folder or cache, else fetched into the cache
    (honouring $SAFETY_HARNESS_DATA_SOURCE and $SAFETY_HARNESS_OFFLINE). None when the manifest has no such
    name."""
    from harness.data.manifest import manifest

    if Path(name).exists():
        return None
    files = manifest().values()
    exact = [f for f in files if name in (f.name, f.name.rsplit("/", 1)[-1])]
    below = [f for f in files if f.name.startswith(name.rstrip("/") + "/")]
    if not exact and not below:
        return None
    if exact:
        found = locate(exact[0].name, data_dir)
        return found or fetch(exact[:1], dest=data_cache(), notify=notify)[0]
    if data_dir is not None and (Path(data_dir) / name).is_dir():
        return Path(data_dir) / name
    fetch([f for f in below if locate(f.name, None) is None], dest=data_cache(), notify=notify)
    return data_cache() / name.rstrip("/")
