"""The dataset manifest (``manifest.toml`` beside this module): every upstream file the suites, scorers and
trainer read, with its repository, pinned commit, upstream path, content pin (sha256, or git's blob id where
no copy was at hand to compute the sha256), size, licence and citation."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from harness.core.errors import DataError

MANIFEST_FILE = "manifest.toml"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX40 = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Source:
    name: str
    repo: str  # owner/name on GitHub
    commit: str
    licence: str
    citation: str


@dataclass(frozen=True)
class DataFile:
    name: str  # path inside a data folder, e.g. "xstest/xstest_prompts.csv"
    source: Source
    path: str  # path inside the upstream repository at source.commit
    sha256: str  # "" for a file pinned by its git blob id only
    size: int | None  # None where unknown: downloads are then capped at fetch.UNSIZED_LIMIT bytes
    used_by: tuple[str, ...]
    licence: str
    git_blob: str = ""  # git's object id of the file at source.commit (sha1 of b"blob <size>\0" + content)

    def url(self, base: str) -> str:
        """The file under a mirror laid out like GitHub's raw content host: <base>/<owner>/<repo>/<commit>/<path>."""
        return f"{base.rstrip('/')}/{self.source.repo}/{self.source.commit}/{self.path}"


@lru_cache(maxsize=1)
def manifest() -> dict[str, DataFile]:
    """File name (data-folder path) -> entry, in manifest order."""
    return parse_manifest(resources.files("harness.data").joinpath(MANIFEST_FILE).read_text(encoding="utf-8"))


def parse_manifest(text: str) -> dict[str, DataFile]:
    """The entries of a manifest's TOML text; a :class:`DataError` for an entry without a valid pin."""
    raw = tomllib.loads(text)
    sources = {name: Source(name, s["repo"], s["commit"], s["licence"], s["citation"])
               for name, s in raw["sources"].items()}
    files = {}
    for item in raw["files"]:
        source = sources[item["source"]]
        entry = DataFile(item["name"], source, item["path"], item.get("sha256", ""), item.get("size"),
                         tuple(item.get("used_by", ())), item.get("licence", source.licence), item.get("git_blob", ""))
        if not (_HEX64.fullmatch(entry.sha256) or (not entry.sha256 and _HEX40.fullmatch(entry.git_blob))):
            # Every file is checked on every read: an entry with no pin could hold anything.
            raise DataError(f"{MANIFEST_FILE}: {entry.name} has no valid sha256 or git_blob pin")
        files[entry.name] = entry
    return files


def select(names: list[str] | None, *, default_users: set[str] | None = None) -> list[DataFile]:
    """The entries NAMES stand for: a file (its data-folder path or bare file name), a source (``stl``,
    ``xstest``, ...) or a user of the files (a suite, ``trainer``, ``refusal_classifier``, ...). None: the
    files ``default_users`` read (callers pass ``harness.data.suites.builtin_suite_names()``: the suites import
    the fetcher, which imports this module, so this module does not ask them itself)."""
    files = manifest()
    if not names:
        return [f for f in files.values() if set(default_users or ()) & set(f.used_by)]
    out: dict[str, DataFile] = {}
    for name in names:
        # A file, else a user (so that the suite `xstest` means its prompts, not the whole xstest source), else
        # a source.
        hits = ([f for f in files.values() if name in (f.name, f.name.rsplit("/", 1)[-1])]
                or [f for f in files.values() if name in f.used_by]
                or [f for f in files.values() if name == f.source.name])
        if not hits:
            users = sorted({u for f in files.values() for u in f.used_by} | {f.source.name for f in files.values()})
            raise DataError(f"unknown dataset {name!r}: give a file name, or one of {', '.join(users)} "
                            "(safety-harness data list shows the files)")
        out.update((f.name, f) for f in hits)
    return list(out.values())
