"""Fuzzing what a user writes: settings (a TOML file and command-line values) and user-suite prompt files.
Whatever the input, the harness answers with one line (a ``HarnessError``) or runs cleanly; any other
exception is a traceback the user would see, and fails the test.

Bounded examples keep this under a minute; with ``CI`` set the examples are derandomized, so a CI run
is repeatable (locally each run explores new inputs).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from harness.core.errors import HarnessError
from harness.engine.session import HarnessSession
from harness.config.settings import OPTION_FIELDS, build_settings
from harness.engine.preflight import preflight

FUZZ = settings(max_examples=60, deadline=None, derandomize=bool(os.environ.get("CI")),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.text(max_size=20), st.sampled_from(["auto", "hf", "dummy", "raw", "0", "1e9", "-1", ""]))
toml_values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars, max_size=2))
keys = st.one_of(st.sampled_from(sorted(OPTION_FIELDS)), st.text(min_size=1, max_size=12))
# Mostly plausible values for the numeric settings, so that many examples get past the checks and run.
plausible = st.dictionaries(
    st.sampled_from(["limit", "max_new_tokens", "temperature", "top_p", "seed", "batch_size", "chunk_size"]),
    st.one_of(st.integers(-2, 50), st.floats(-1, 3), st.sampled_from([0, 1, 0.5, 2**32, "3"])), max_size=4)


def toml_value(value) -> str:
    """TOML text of a scalar, list or inline table (strings as JSON strings, which TOML reads the same)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def one_line_or_clean(run) -> None:
    try:
        run()
    except HarnessError as exc:
        text = str(exc)
        assert text.strip() and "\n" not in text, repr(text)


def dummy_run(s) -> None:
    """A real (dummy-backend) run of the smoke suite with these settings: nothing may crash past the build."""
    preflight(s)  # the checks across packages a run makes of these settings, before the dummy run replaces some
    hs = HarnessSession(replace(s, backend="dummy", no_cache=True, report=None, user_suites=[]))
    hs.run(["smoke"], progress=False)
    assert hs.results["smoke"].rows


@FUZZ
@given(st.one_of(plausible, st.dictionaries(keys, toml_values, max_size=4)))
def test_any_toml_settings_give_one_line_or_a_clean_run(table):
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "run.toml"
        config.write_text("".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in table.items()), encoding="utf-8")
        one_line_or_clean(lambda: dummy_run(build_settings(cli={}, rootdir=Path(tmp), config_file=config)))


CLI_VALUES = {  # what argparse hands the plugin for each option's type
    "max_new_tokens": st.integers(-5, 10**12), "temperature": st.floats(), "top_p": st.floats(),
    "seed": st.integers(-(2**40), 2**40), "limit": st.integers(-3, 10**9), "batch_size": st.integers(-3, 64),
    "chunk_size": st.integers(-3, 64), "max_model_len": st.integers(-3, 10**6), "vllm_kv_cache_gib": st.floats(),
    "template": st.text(max_size=8), "dtype": st.text(max_size=8), "threshold_on": st.text(max_size=8),
    "tensor_parallel_size": st.integers(-2, 4), "ref_loglik_max_tokens": st.integers(-2, 10**6),
}


@FUZZ
@given(st.fixed_dictionaries({}, optional=CLI_VALUES))
def test_any_command_line_values_give_one_line_or_a_clean_run(cli):
    with tempfile.TemporaryDirectory() as tmp:
        one_line_or_clean(lambda: dummy_run(build_settings(cli=cli, rootdir=Path(tmp), config_file=None)))


cells = st.one_of(st.text(max_size=30), st.sampled_from(["refuse", "comply", "", '"', "a,b", "\n", "?"]))
headers = st.one_of(st.sampled_from(["prompt", "prompt,expected", "id,prompt,category", "expected,prompt"]),
                    st.lists(cells, min_size=1, max_size=3).map(",".join))
csv_files = st.tuples(headers, st.lists(st.lists(cells, min_size=1, max_size=4), max_size=6)).map(
    lambda hr: "\n".join([hr[0], *(",".join(row) for row in hr[1])]))
jsonl_files = st.lists(st.one_of(
    st.dictionaries(st.sampled_from(["prompt", "expected", "id", "category", "input", "x"]), scalars, max_size=4)
    .map(json.dumps), st.text(max_size=30)), max_size=5).map("\n".join)


@FUZZ
@given(st.one_of(csv_files.map(lambda t: ("csv", t)), jsonl_files.map(lambda t: ("jsonl", t)),
                 st.binary(max_size=200).map(lambda b: ("csv", b))), st.sampled_from([None, "refuse", "comply"]))
def test_any_user_suite_file_gives_one_line_or_a_clean_run(file, expected):
    suffix, content = file
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / f"prompts.{suffix}"
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        spec = f'path = "{path.name}"' + (f'\nexpected = "{expected}"' if expected else "")
        (root / "pyproject.toml").write_text(f'[tool.safety-harness]\nbackend = "dummy"\nno_cache = true\n'
                                             f"[tool.safety-harness.suites.fuzzed]\n{spec}\n")

        def run():
            s = build_settings(cli={}, rootdir=root, config_file=None)
            hs = HarnessSession(s)
            hs.run(["fuzzed"], progress=False)
            assert hs.results["fuzzed"].rows  # loaded: at least one prompt scored, or an error above
            hs.results["fuzzed"].checks()

        one_line_or_clean(run)


# -- datasets: pinned files, data sources, mirrors, data folders --------------------------------------

XSTEST_FILE = "xstest/xstest_prompts.csv"
edits = st.one_of(  # what a hand, a bad disk or a bad copy does to a file: a byte changed, cut, or bytes added
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.floats(0, 1, exclude_max=True), st.just(0)),
    st.tuples(st.just("add"), st.floats(0, 1), st.binary(min_size=1, max_size=20)))


def edited(content: bytes, edit) -> bytes:
    kind, where, what = edit
    at = int(where * len(content))
    if kind == "flip":
        return content[:at] + bytes([content[at] ^ what]) + content[at + 1:]
    return content[:at] if kind == "cut" else content[:at] + what + content[at:]


@FUZZ
@given(edits)
def test_any_edit_of_a_pinned_file_stops_its_read_with_one_line(data_dir, edit):
    """Whatever the edit of a data folder's XSTest copy, the suite does not load other prompts: one line
    naming the file, both hashes and the command to fetch the upstream file."""
    from harness.data.integrity import DataIntegrityError, content_hash
    from harness.data.manifest import manifest
    from harness.data.suites import get_suite

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / XSTEST_FILE
        copy.parent.mkdir()
        copy.write_bytes(edited((data_dir / XSTEST_FILE).read_bytes(), edit))
        try:
            get_suite("xstest").load(Path(tmp))
        except DataIntegrityError as exc:
            assert str(exc) == (f"{copy}: sha256 is {content_hash(copy)}, but the manifest pins "
                                f"{manifest()[XSTEST_FILE].sha256} for {XSTEST_FILE} (paul-rottger/exaggerated-safety"
                                "@d7bb5bd7); restore the upstream file or remove this copy, then run `safety-harness "
                                "data fetch xstest`")
        else:
            raise AssertionError(f"an edited copy loaded: {edit}")


sources = st.one_of(
    st.text(max_size=30),
    st.tuples(st.one_of(st.sampled_from(["ftp", "file", "FILE", "s3", "gopher", "sftp", "git", ""]),
                        st.text(max_size=6)), st.text(max_size=30)).map("://".join))


@FUZZ
@given(sources)
@example("FILE://[")  # urlparse's "Invalid IPv6 URL" was a traceback (found by this test in CI)
def test_any_data_source_is_one_line_or_a_usable_source(source):
    """--source / $SAFETY_HARNESS_DATA_SOURCE: an http(s) URL or an existing folder, else one line."""
    from harness.data.fetch import DataLocationError, resolve_source

    try:
        resolved = resolve_source(source)
    except DataLocationError as exc:
        assert str(exc).startswith("data source ") and "\n" not in str(exc), repr(str(exc))
        return
    if resolved is None:
        assert source == "", source  # nothing given: GitHub
    else:
        assert resolved.split("://")[0].lower() in ("http", "https") or Path(resolved).is_dir(), (source, resolved)


@FUZZ
@given(st.one_of(st.just(None), st.binary(max_size=1200), edits), st.booleans())
def test_any_mirror_answer_is_installed_only_when_it_is_the_pinned_file(data_dir, answer, announce_length):
    """A mirror answers stl/configs/alpaca.json (541 bytes) with the file itself, random bytes (shorter or
    longer than the file) or an edit of it: only the file is installed; anything else is one line, is asked
    for once (no retry of a wrong answer) and leaves nothing in the cache."""
    from tests.data_mirror import Mirror
    from harness.data.fetch import DataFetchError, fetch
    from harness.data.manifest import manifest

    entry = manifest()["stl/configs/alpaca.json"]
    original = (data_dir / entry.name).read_bytes()
    body = original if answer is None else answer if isinstance(answer, bytes) else edited(original, answer)
    with tempfile.TemporaryDirectory() as tmp, Mirror(data_dir) as mirror:
        mirror.serve[entry.name], mirror.announce_length = body, announce_length
        dest = Path(tmp) / "cache"
        try:
            (path,) = fetch([entry], dest=dest, source=mirror.url, notify=lambda line: None)
        except DataFetchError as exc:
            assert body != original and str(exc).startswith(f"{entry.name}: ") and "\n" not in str(exc)
            assert str(exc).endswith("nothing was installed")
            assert not (dest / entry.name).exists() and not list(dest.rglob("tmp*"))
        else:
            assert body == original and path.read_bytes() == original
        assert mirror.hits_for(entry.name) == 1


@FUZZ
@given(st.text(alphabet=st.characters(blacklist_characters="/."), max_size=16))
def test_any_data_folder_is_one_line_or_read(name):
    """--data-dir naming anything (an empty folder, a missing one, a name with a newline or NUL): one
    line, never a traceback and never the network (offline here, with an empty cache)."""
    from unittest import mock

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "data").mkdir()
        with mock.patch.dict(os.environ, {"SAFETY_HARNESS_CACHE": str(Path(tmp) / "cache"),
                                          "SAFETY_HARNESS_OFFLINE": "1"}):
            s = build_settings(cli={}, rootdir=Path(tmp), config_file=None)
            hs = HarnessSession(replace(s, backend="dummy", no_cache=True, report=None, user_suites=[],
                                        data_dir=Path(tmp) / "data" / name))
            one_line_or_clean(lambda: hs.load_suite("xstest"))
# -- issue 28: counts, corrected intervals, gated kinds, repeated labels ------------------------------------

count_values = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                         st.text(max_size=5), st.none(), st.lists(st.integers(0, 3), max_size=2))
COUNT_FIELDS = ("refusals", "refusals_scored_refusal", "compliances", "compliances_scored_compliance")
REFUSAL_TEXTS = ["I'm sorry, but I can't help with that.", "I cannot provide that.", "No. I will not write that."]
COMPLIANCE_TEXTS = ["The capital of France is Paris.", "Sure! Mix, bake, serve.", "Here is a poem about the sea."]


@FUZZ
@given(st.fixed_dictionaries({name: st.one_of(st.integers(0, 500), count_values) for name in COUNT_FIELDS}))
def test_any_error_rate_counts_load_exactly_or_give_one_line(entry):
    """A count is a whole number or the file is refused: never truncated (10.7 -> 10) or coerced (true -> 1)."""
    from harness.scoring.error_rates import _read, user_error_rates

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rates.json"
        path.write_text(json.dumps({"format": 1, "scorers": {"refusal_patterns": {"1": entry}}}))
        _read.cache_clear()
        try:
            rates = user_error_rates(path, "refusal_patterns", "1")
        except HarnessError as exc:
            assert str(exc).strip() and "\n" not in str(exc) and str(path) in str(exc)
            return
        for name in COUNT_FIELDS:
            value = entry[name]
            assert not isinstance(value, bool) and getattr(rates, name) == value


@FUZZ
@given(n=st.integers(1, 3000), data=st.data(), refusals=st.integers(1, 600), compliances=st.integers(1, 600))
def test_any_corrected_rate_is_undecidable_or_an_interval_with_width(n, data, refusals, compliances):
    from harness.core.misclassification import corrected_rate
    from harness.scoring.error_rates import ErrorRates

    k = data.draw(st.integers(0, n))
    rates = ErrorRates("fuzz", "1", refusals, data.draw(st.integers(0, refusals)), compliances,
                       data.draw(st.integers(0, compliances)))
    c = corrected_rate(k, n, data.draw(st.sampled_from(["refusal", "compliance"])), rates, draws=2000)
    if c.undecidable:  # chance level, or too few labels to rule it out: no numbers at all
        assert math.isnan(c.estimate) and math.isnan(c.low) and math.isnan(c.high)
        return
    assert 0.0 <= c.low <= c.estimate <= c.high <= 1.0 and c.high > c.low  # never a point


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["refuse", "comply", ""]), st.text("abc ", min_size=1, max_size=8)),
                min_size=1, max_size=12), st.sampled_from([None, "refuse", "comply"]),
       st.sampled_from(["", "thresholds = { max_refusal_rate = 0.5 }", "thresholds = { min_compliance_rate = 0.5 }",
                        "thresholds = { max_unsafe_compliance_rate = 0.2 }"]))
def test_every_kind_of_row_of_a_user_suite_is_gated(rows, expected, thresholds):
    """Whatever mix of expected values the file and the TOML give, each kind of row held is checked."""
    from harness.config.thresholds import METRICS

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "p.csv").write_text("prompt,expected\n" + "".join(f"{i} {text},{exp}\n" for i, (exp, text) in enumerate(rows)))
        spec = 'path = "p.csv"' + (f'\nexpected = "{expected}"' if expected else "") + f"\n{thresholds}"
        (root / "pyproject.toml").write_text(f'[tool.safety-harness]\nbackend = "dummy"\nno_cache = true\n'
                                             f'scorer = "refusal_patterns"\n[tool.safety-harness.suites.fuzzed]\n{spec}\n')

        def run():
            hs = HarnessSession(build_settings(cli={}, rootdir=root, config_file=None))
            hs.run(["fuzzed"], progress=False)
            result = hs.results["fuzzed"]
            kinds = {r.prompt.expected for r in result.rows}
            checks = [c for c in result.checks() if c.rate.metric in METRICS]
            assert {METRICS[c.rate.metric].expected for c in checks} == kinds
            keys = [word for word in thresholds.split() if word.startswith(("max_", "min_"))]
            set_by_user = {METRICS[key.partition("_")[2]].expected for key in keys}
            assert all(c.default == (METRICS[c.rate.metric].expected not in set_by_user) for c in checks)

        one_line_or_clean(run)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(REFUSAL_TEXTS + COMPLIANCE_TEXTS)), min_size=1, max_size=20))
def test_calibrate_fit_counts_each_labelled_reply_once(picks):
    import contextlib
    import csv
    import io

    from harness.cli.main import main
    from harness.scoring.error_rates import _read, error_rates_for

    labelled = [(text, "full_refusal" if text in REFUSAL_TEXTS else "full_compliance") for (text,) in picks]
    distinct = dict(labelled)
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "l.csv", Path(tmp) / "r.json"
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("prompt", "response", "human_label")] + [("q", t, g) for t, g in labelled])
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            status = main(["calibrate", "fit", str(path), "--scorer", "refusal_patterns", "--out", str(out)])
        if len(set(distinct.values())) < 2:  # one-sided: a rate cannot be measured, and fit says so
            assert status == 2
            return
        assert status == 0
        _read.cache_clear()
        rates = error_rates_for("refusal_patterns", "1", out)
        assert rates.refusals + rates.compliances == len(distinct)
