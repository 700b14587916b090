"""Replay backend: responses taken from a previous report or a CSV/JSONL/Parquet file, so a run can be
re-scored (new scorer, new thresholds) without a model.

Rows are matched on (suite, prompt_id) when the file has both columns (a harness report does), else on
the prompt text and its input (where the file has an ``input`` column). Each prompt row is looked up on its
own (harness.engine.cache.ROW_REPLY_BACKENDS): two rows of one text may hold different replies. The
response column is ``response``, or ``completion`` (XSTest's files), or the one named in
``--replay-response-column``.
"""

from __future__ import annotations

from pathlib import Path

from harness.backends.base import BackendOptions, BatchBackend, SamplingConfig, register_backend
from harness.core.errors import BackendError, DataError
from harness.core.text import one_line
from harness.core.types import GenerationRequest, GenerationResult

RESPONSE_COLUMNS = ("response", "completion")


def read_rows(path: Path) -> list[dict]:
    """A CSV, JSONL/JSON or Parquet file as a list of dicts (``harness.data.loaders.read_table``); bytes
    that are not UTF-8 are replaced, since a response file is scored, not parsed."""
    from harness.data.loaders import read_table

    if not path.is_file():
        raise BackendError(f"replay file {path} not found")
    try:
        return [row for _, row in read_table(path, replace_undecodable=True)]
    except DataError as exc:
        raise BackendError(f"replay file {exc}") from None


class ReplayBackend(BatchBackend):
    name = "replay"

    def __init__(self, *, model, sampling: SamplingConfig, options: BackendOptions):
        if not options.replay_path:
            raise BackendError("--backend replay needs --replay FILE (a report, CSV, JSONL or Parquet)")
        self.path = Path(options.replay_path)
        rows = read_rows(self.path)
        columns = set(rows[0]) if rows else set()
        wanted = options.replay_response_column
        candidates = (wanted,) if wanted else RESPONSE_COLUMNS
        self.response_column = next((c for c in candidates if c in columns), None)
        if self.response_column is None:
            raise BackendError(
                f"replay file {self.path}: missing column {' or '.join(map(repr, candidates))} "
                f"(found: {', '.join(sorted(columns)) or 'no rows'})"
            )
        self.by_id = {}
        self.by_prompt = {}
        # Matched on the prompt text, rows of one instruction are told apart by their input where the file has it.
        self.input_column = "input" in columns
        if {"suite", "prompt_id"} <= columns:
            self.by_id = self._index(rows, lambda r: (str(r["suite"]), str(r["prompt_id"])), "/".join)
        elif "prompt" in columns:
            self.by_prompt = self._index(rows, lambda r: self._text_key(r["prompt"], r.get("input")), _text_name)
        else:
            raise BackendError(
                f"replay file {self.path}: missing column 'prompt' (or 'suite' and 'prompt_id') "
                f"(found: {', '.join(sorted(columns))})"
            )

    def _text_key(self, prompt, input_text) -> tuple[str, str]:
        return str(prompt), (str(input_text or "") if self.input_column else "")

    def _index(self, rows: list[dict], key, name) -> dict:
        """Rows by ``key``; two rows of one key with different responses leave the reply to use undecided."""
        out: dict = {}
        for row in rows:
            k = key(row)
            if k in out and out[k][self.response_column] != row[self.response_column]:
                raise BackendError(f"replay file {self.path}: two different responses for prompt {name(k)}; "
                                   "keep one row per prompt")
            out[k] = row
        return out

    def _lookup(self, req: GenerationRequest):
        if self.by_id:
            return self.by_id.get((req.prompt.suite, req.prompt.prompt_id))
        return self.by_prompt.get(self._text_key(req.prompt.prompt, req.prompt.input))

    def generate_batch(self, requests: list[GenerationRequest], progress=None) -> list[GenerationResult]:
        found = [self._lookup(r) for r in requests]
        missing = [r for r, row in zip(requests, found) if row is None]
        if missing:
            first = missing[0].prompt
            raise BackendError(
                f"replay file {self.path} has no response for {len(missing)} of {len(requests)} prompts "
                f"(first: {first.suite}/{first.prompt_id})"
            )
        if self.by_id:
            self._check_same_prompts(requests, found)
        results = []
        for row in found:
            text = row[self.response_column]
            text = "" if text is None else str(text)
            n_tokens = row.get("n_response_tokens")
            n_tokens = int(n_tokens) if n_tokens not in (None, "") else len(text.split())
            results.append(GenerationResult(text, n_tokens, "replay"))
        if progress:
            progress(len(requests))
        return results

    def _check_same_prompts(self, requests: list[GenerationRequest], found: list[dict]) -> None:
        """Rows matched on (suite, prompt_id) hold the suite's prompt and input where the file has those columns:
        a file of other data (an edited suite whose row-number ids now name other prompts, another dataset
        revision) would have each response scored as the answer to another prompt. Whitespace aside."""
        same = lambda a, b: " ".join(str(a or "").split()) == " ".join(str(b or "").split())  # noqa: E731
        wrong = []
        for req, row in zip(requests, found):
            for column in ("prompt", "input"):
                if column in row and not same(row[column], getattr(req.prompt, column)):
                    wrong.append((req.prompt, column, row[column]))
                    break
        if wrong:
            p, column, theirs = wrong[0]
            what = "is" if column == "prompt" else "has input"
            raise BackendError(
                f"replay file {self.path}: prompt {p.suite}/{p.prompt_id} {what} {one_line(theirs, 80)!r} there, "
                f"but {one_line(getattr(p, column), 80)!r} in the suite; {len(wrong)} of {len(requests)} prompts "
                "differ, so their responses answer other prompts (replay a report of the same suite data)")

    def close(self) -> None:
        pass


def _text_name(key: tuple[str, str]) -> str:
    prompt, input_text = key
    return repr(one_line(prompt, 80)) + (f" with input {one_line(input_text, 80)!r}" if input_text else "")


@register_backend("replay")
def make_replay(*, model, sampling, options) -> ReplayBackend:
    return ReplayBackend(model=model, sampling=sampling, options=options)
