"""The dataset manifest (``manifest.toml`` beside this module): every upstream file the suites, scorers and
trainer read, with its repository, pinned commit, upstream path, sha256, size, licence and citation."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from harness.core.errors import DataError

MANIFEST_FILE = "manifest.toml"


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
    sha256: str  # "" when recorded on first fetch
    size: int | None
    used_by: tuple[str, ...]
    licence: str

    def url(self, base: str) -> str:
        """The file under a mirror laid out like GitHub's raw content host: <base>/<owner>/<repo>/<commit>/<path>."""
        return f"{base.rstrip('/')}/{self.source.repo}/{self.source.commit}/{self.path}"


@lru_cache(maxsize=1)
def manifest() -> dict[str, DataFile]:
    """File name (data-folder path) -> entry, in manifest order."""
    text = resources.files("harness.data").joinpath(MANIFEST_FILE).read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    sources = {name: Source(name, s["repo"], s["commit"], s["licence"], s["citation"])
               for name, s in raw["sources"].items()}
    files = {}
    for item in raw["files"]:
        source = sources[item["source"]]
        files[item["name"]] = DataFile(item["name"], source, item["path"], item.get("sha256", ""), item.get("size"),
                                       tuple(item.get("used_by", ())), item.get("licence", source.licence))
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
