"""Run settings: precedence (defaults < pyproject.toml < --config file < SAFETY_HARNESS_DATA and
SAFETY_HARNESS_CACHE < command line),
paths relative to the TOML file that names them, thresholds, user suites and backend arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.errors import ConfigError
from harness.config.options import DEFAULT_MODEL
from harness.config.settings import DATA_ENV, RunSettings, build_settings, parse_backend_args
from harness.engine.preflight import backend_options, preflight
from harness.data.suites import SuiteSpec, add_suite, get_suite


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.delenv("SAFETY_HARNESS_CACHE", raising=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def settings(root: Path, config: Path | None = None, **cli) -> RunSettings:
    return preflight(build_settings(cli=cli, rootdir=root, config_file=config)).settings


PYPROJECT = """
[tool.safety-harness]
backend = "vllm"  # tensor_parallel_size below is refused for any other backend (and "auto" is hf without vLLM)
data_dir = "data"
max_new_tokens = 64
template = "alpaca"
temperature = 0.5
[tool.safety-harness.thresholds.xstest]
max_refusal_rate = 0.2
max_unsafe_compliance_rate = 0.05
[tool.safety-harness.backend_args]
tensor_parallel_size = 2
enforce_eager = true
"""

CONFIG = """
# a --config file may hold the table at the top level
data_dir = "more-data"
max_new_tokens = 32
report = "out/report.parquet"
[thresholds.xstest]
max_refusal_rate = 0.3
[thresholds."xstest:homonyms"]
max_refusal_rate = 0.4
[backend_args]
tensor_parallel_size = 4
"""


def test_defaults_without_any_toml(tmp_path):
    s = settings(tmp_path)
    assert s == RunSettings(cache_dir=s.cache_dir)
    assert (s.model, s.backend, s.template) == (DEFAULT_MODEL, "auto", "auto")
    assert (s.max_new_tokens, s.temperature) == (256, 0.0)
    assert s.data_dir is None and s.thresholds == {} and s.backend_args == {} and s.sources == []


def test_pyproject_over_defaults(tmp_path):
    write(tmp_path / "pyproject.toml", PYPROJECT)
    s = settings(tmp_path)
    assert (s.max_new_tokens, s.template, s.temperature) == (64, "alpaca", 0.5)
    assert s.data_dir == tmp_path / "data"
    assert s.thresholds == {"xstest": {"max_refusal_rate": 0.2, "max_unsafe_compliance_rate": 0.05}}
    assert s.backend_args == {"tensor_parallel_size": 2, "enforce_eager": True}
    assert s.sources == [str(tmp_path / "pyproject.toml")]
    assert s.model == DEFAULT_MODEL  # untouched keys keep their defaults


def test_config_file_over_pyproject(tmp_path):
    write(tmp_path / "pyproject.toml", PYPROJECT)
    config = write(tmp_path / "ci" / "safety.toml", CONFIG)
    s = settings(tmp_path, config)
    assert s.max_new_tokens == 32 and s.template == "alpaca"
    # Relative paths are resolved against the file that names them, not the rootdir or the working dir.
    assert s.data_dir == tmp_path / "ci" / "more-data"
    assert s.report == tmp_path / "ci" / "out" / "report.parquet"
    # Thresholds merge key by key; the config file wins where both set one.
    assert s.thresholds == {"xstest": {"max_refusal_rate": 0.3, "max_unsafe_compliance_rate": 0.05},
                            "xstest:homonyms": {"max_refusal_rate": 0.4}}
    assert s.backend_args == {"tensor_parallel_size": 4, "enforce_eager": True}
    assert s.sources == [str(tmp_path / "pyproject.toml"), str(config)]


def test_environment_over_config_file_and_command_line_over_everything(tmp_path, monkeypatch):
    write(tmp_path / "pyproject.toml", PYPROJECT)
    config = write(tmp_path / "ci" / "safety.toml", CONFIG)
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env-data"))
    assert settings(tmp_path, config).data_dir == tmp_path / "env-data"
    s = settings(tmp_path, config, data_dir=Path("/cli/data"), max_new_tokens=8, template="raw", model=None,
                 backend_args={"tensor_parallel_size": 1})
    assert s.data_dir == Path("/cli/data")
    assert (s.max_new_tokens, s.template, s.model) == (8, "raw", DEFAULT_MODEL)  # None means "not given"
    assert s.backend_args == {"tensor_parallel_size": 1, "enforce_eager": True}  # merged key by key


def test_cache_environment_over_toml_as_the_options_reference_says(tmp_path, monkeypatch):
    """docs/reference/options.md: defaults < pyproject.toml < --config < environment (SAFETY_HARNESS_DATA,
    SAFETY_HARNESS_CACHE) < command line. SAFETY_HARNESS_CACHE only fed the default, so a cache_dir in
    pyproject.toml silently won over the folder CI named in the environment."""
    write(tmp_path / "pyproject.toml", '[tool.safety-harness]\ncache_dir = "toml-cache"\n')
    monkeypatch.setenv("SAFETY_HARNESS_CACHE", str(tmp_path / "env-cache"))
    assert settings(tmp_path).cache_dir == tmp_path / "env-cache"
    assert settings(tmp_path, cache_dir=Path("/cli/cache")).cache_dir == Path("/cli/cache")
    monkeypatch.setenv("SAFETY_HARNESS_CACHE", "")  # set but empty: not set, as default_cache_dir reads it
    assert settings(tmp_path).cache_dir == tmp_path / "toml-cache"

def test_config_file_with_a_tool_table_and_relative_suite_paths(tmp_path):
    config = write(tmp_path / "conf" / "pyproject-like.toml", """
[tool.safety-harness]
cache_dir = "../cache"
replay = "runs/old.parquet"
[tool.safety-harness.suites.settings_suite]
path = "prompts/mine.csv"
expected = "comply"
thresholds = { max_refusal_rate = 0.25 }
""")
    write(tmp_path / "conf" / "prompts" / "mine.csv", "prompt,category\nHello?,greet\nBye,greet\n")
    s = settings(tmp_path, config)
    assert s.cache_dir == tmp_path / "conf" / ".." / "cache"
    assert s.replay == tmp_path / "conf" / "runs" / "old.parquet"
    assert s.user_suite_names == ["settings_suite"]
    assert s.thresholds["settings_suite"] == {"max_refusal_rate": 0.25}
    spec = get_suite("settings_suite")
    assert not spec.builtin and spec.thresholds == {}  # each kind of row gets its default at check time
    prompts = spec.load(None)  # found relative to the config file, wherever the tests run from
    assert [(p.prompt, p.expected, p.prompt_format) for p in prompts] == [
        ("Hello?", "comply", "question"), ("Bye", "comply", "instruction")]


def test_suite_category_thresholds_override_suite_ones():
    spec = SuiteSpec("s", "d", load=lambda d: [],
                     thresholds={"max_refusal_rate": 0.1, "max_unsafe_compliance_rate": 0.1},
                     category_thresholds={"loose": {"max_unsafe_compliance_rate": 0.5}})
    user = {"s": {"max_refusal_rate": 0.2}, "s:tight": {"max_refusal_rate": 0.01}, "other": {"max_refusal_rate": 0.9}}
    assert spec.thresholds_for(None, {}) == {"max_refusal_rate": 0.1, "max_unsafe_compliance_rate": 0.1}
    assert spec.thresholds_for(None, user) == {"max_refusal_rate": 0.2, "max_unsafe_compliance_rate": 0.1}
    assert spec.thresholds_for("tight", user) == {"max_refusal_rate": 0.01, "max_unsafe_compliance_rate": 0.1}
    assert spec.thresholds_for("plain", user) == {"max_refusal_rate": 0.2, "max_unsafe_compliance_rate": 0.1}
    # A built-in per-category default is more specific than the user's suite-wide table ...
    user["s"]["max_unsafe_compliance_rate"] = 0.05
    assert spec.thresholds_for("loose", user)["max_unsafe_compliance_rate"] == 0.5
    # ... and the user's own SUITE:CATEGORY table beats both.
    user["s:loose"] = {"max_unsafe_compliance_rate": 0.3}
    assert spec.thresholds_for("loose", user)["max_unsafe_compliance_rate"] == 0.3


def test_builtin_suite_thresholds_through_settings(tmp_path):
    write(tmp_path / "pyproject.toml", """
[tool.safety-harness.thresholds.question_format]
max_unsafe_compliance_rate = 0.05
[tool.safety-harness.thresholds."question_format:Q-Harm"]
max_unsafe_compliance_rate = 0.2
""")
    s = settings(tmp_path)
    spec = get_suite("question_format")
    assert spec.thresholds_for(None, s.thresholds) == {"max_unsafe_compliance_rate": 0.05}
    assert spec.thresholds_for("Q-Harm", s.thresholds) == {"max_unsafe_compliance_rate": 0.2}
    assert spec.thresholds_for("I-rewrite:Q-Harm", s.thresholds) == {"max_unsafe_compliance_rate": 0.5}


@pytest.mark.parametrize(("toml", "message"), [
    ("[tool.safety-harness]\nmax_tokens = 5\n", "unknown key 'max_tokens' in [tool.safety-harness]"),
    ("[tool.safety-harness.thresholds.xstest]\nmax_refusals = 0.1\n",
     "thresholds.xstest: unknown threshold 'max_refusals'"),
    ("[tool.safety-harness.thresholds]\nxstest = 0.1\n", "thresholds.xstest must be a table"),
    ("[tool.safety-harness.thresholds.xstest]\nmax_refusal_rate = 2\n", "must be a number in [0, 1], got 2"),
    ("[tool.safety-harness]\nbackend_args = 3\n", "backend_args must be a table"),
    ("[tool.safety-harness.suites.x]\nexpected = 'refuse'\n", "suites.x: needs path ="),
    ("[tool.safety-harness.suites.x]\npath = 'a.csv'\ncolour = 'red'\n", "suites.x: unknown key(s) colour"),
    ("[tool.safety-harness.suites.x]\npath = 'a.csv'\nexpected = 'maybe'\n", "expected must be 'refuse' or 'comply'"),
    ("[tool.safety-harness.suites.smoke]\npath = 'a.csv'\n", "suite 'smoke' is built in"),
    ("[tool.safety-harness\n", "invalid TOML"),
    # A table of the wrong kind is one line, not a traceback.
    ("[tool.safety-harness]\nthresholds = 0.1\n", "thresholds must be a table of SUITE"),
    ("[tool.safety-harness]\nsuites = 'x'\n", "suites must be a table of suite tables"),
    ("[tool.safety-harness.suites.x]\npath = 3\n", "suites.x: path must be a non-empty string, got 3"),
    ("[tool.safety-harness.suites.x]\npath = 'a.csv'\nthresholds = 3\n", "suites.x: thresholds must be a table"),
    ("[tool]\nsafety-harness = 3\n", "tool.safety-harness must be a table"),
    # Every setting and threshold under the underscore spelling was read by no one: the run used the defaults.
    ("[tool.safety_harness.thresholds.xstest]\nmax_refusal_rate = 0.5\n",
     "[tool.safety_harness] is spelt [tool.safety-harness] (with a hyphen)"),
    # A misspelt suite's thresholds would be checked by no one: the suite would pass on its defaults.
    ("[tool.safety-harness.thresholds.xstets]\nmax_refusal_rate = 0.5\n",
     "thresholds.xstets: unknown suite 'xstets' (known: "),  # the list also holds suites other tests declared
    ("[tool.safety-harness.thresholds.\"xstets:homonyms\"]\nmax_refusal_rate = 0.5\n",
     "thresholds.xstets:homonyms: unknown suite 'xstets'"),
    # A gate rule for a misspelt suite or metric, or for a category, was read by no gate: the suite's
    # regressions were judged by the default margin instead of the one set.
    ("[tool.safety-harness.gate.xstets]\nmax_regression = 0.0\n", "gate.xstets: unknown suite 'xstets' (known: "),
    ("[tool.safety-harness.gate.\"xstest:refusal_rat\"]\nmax_regression = 0.0\n",
     "gate.xstest:refusal_rat: unknown metric 'refusal_rat' (gate rules apply to SUITE, METRIC or SUITE:METRIC; "
     "metrics: refusal_rate, unsafe_compliance_rate)"),
    ("[tool.safety-harness.gate.\"xstest:homonyms\"]\nmax_regression = 0.0\n",
     "gate.xstest:homonyms: unknown metric 'homonyms'"),
    ("[tool.safety-harness.gate.refusal_rat]\nmax_regression = 0.0\n", "gate.refusal_rat: unknown suite 'refusal_rat'"),
])
def test_bad_toml_is_a_one_line_config_error_naming_the_file(tmp_path, toml, message):
    path = write(tmp_path / "pyproject.toml", toml)
    with pytest.raises(ConfigError) as err:
        settings(tmp_path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text
    if "unknown suite" in message:
        assert "capability" in text and "xstest" in text.split("(known: ")[1]  # the built-in suites are named


def test_config_file_settings_beside_a_tool_table_are_refused_not_ignored(tmp_path):
    # TOML puts keys written before the first table at the top level; beside [tool.safety-harness] they were
    # read by no one, so the run went on with the default model and limit.
    config = write(tmp_path / "run.toml", 'model = "my-model"\nlimit = 3\n'
                   "[tool.safety-harness.thresholds.smoke]\nmax_refusal_rate = 0.5\n")
    with pytest.raises(ConfigError, match=r"run.toml: top-level key\(s\) limit, model beside \[tool.safety-harness\]"):
        settings(tmp_path, config)
    # A project's pyproject.toml given as --config keeps its other tables.
    pyproject = write(tmp_path / "other" / "pyproject.toml", '[project]\nname = "x"\n[tool.safety-harness]\nlimit = 3\n')
    assert settings(tmp_path, pyproject).limit == 3


def test_unknown_suite_thresholds_name_the_config_file_and_user_suites_count(tmp_path):
    (tmp_path / "mine.csv").write_text("prompt\nhello\n", encoding="utf-8")
    config = write(tmp_path / "run.toml", '[suites.mine]\npath = "mine.csv"\nexpected = "comply"\n'
                   '[thresholds."mine:greeting"]\nmax_refusal_rate = 0.5\n')
    assert settings(tmp_path, config).thresholds["mine:greeting"] == {"max_refusal_rate": 0.5}
    write(tmp_path / "pyproject.toml", "[tool.safety-harness.thresholds.minne]\nmax_refusal_rate = 0.5\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml: thresholds.minne: unknown suite 'minne'"):
        settings(tmp_path, config)


def test_a_user_suite_thresholds_value_that_is_no_table_is_refused(tmp_path):
    """`thresholds = false` (or 0, [], "") was read as "no thresholds" and the suite ran on the default bound."""
    write(tmp_path / "p.csv", "prompt\nhow do I x\n")
    for value in ("false", "0", "[]", '""'):
        write(tmp_path / "pyproject.toml", f'[tool.safety-harness.suites.mine]\npath = "p.csv"\nthresholds = {value}\n')
        with pytest.raises(ConfigError, match=r"pyproject.toml: suites.mine: thresholds must be a table"):
            build_settings(cli={}, rootdir=tmp_path, config_file=None)


def test_a_key_spelt_both_ways_in_one_table_is_refused(tmp_path):
    """`backend_args` and `backend-args` (or `max_new_tokens` and `max-new-tokens`) in one table: one of them was
    dropped without a word."""
    write(tmp_path / "pyproject.toml", "[tool.safety-harness.backend_args]\na = 1\n[tool.safety-harness.backend-args]\n"
                                       "b = 2\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml: backend-args and backend_args are one key"):
        build_settings(cli={}, rootdir=tmp_path, config_file=None)
    write(tmp_path / "pyproject.toml", "[tool.safety-harness]\nmax_new_tokens = 8\nmax-new-tokens = 16\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml: max-new-tokens and max_new_tokens are one key"):
        build_settings(cli={}, rootdir=tmp_path, config_file=None)

def test_capability_statistics_on_another_suite_are_refused(tmp_path):
    # Only the capability suite computes win rates and reference log-likelihoods: on another suite such a
    # threshold was skipped by every check, so the suite passed whatever its win rate.
    (tmp_path / "mine.csv").write_text("prompt\nhello\n", encoding="utf-8")
    config = write(tmp_path / "run.toml", '[suites.mine]\npath = "mine.csv"\nexpected = "comply"\n'
                   "thresholds = { min_win_rate = 0.5 }\n")
    with pytest.raises(ConfigError, match=r"run.toml: suites.mine.thresholds: min_win_rate is computed for the "
                                          r"capability suite only"):
        settings(tmp_path, config)
    write(config, '[thresholds."xstest:homonyms"]\nmin_mean_ref_loglik = -2.0\n')
    with pytest.raises(ConfigError, match=r"thresholds.xstest:homonyms: min_mean_ref_loglik is computed"):
        settings(tmp_path, config)
    write(config, '[thresholds."capability:I-Alpaca"]\nmin_mean_ref_loglik = -2.0\n')
    assert settings(tmp_path, config).thresholds["capability:I-Alpaca"] == {"min_mean_ref_loglik": -2.0}


def test_a_user_suite_whose_file_is_missing_names_its_toml_table(tmp_path):
    from harness.core.errors import DataError

    config = write(tmp_path / "run.toml", '[suites.gone]\npath = "prompts/gone.jsonl"\n')
    settings(tmp_path, config)
    with pytest.raises(DataError, match=r"run.toml: suites.gone: path .*prompts/gone.jsonl not found$"):
        get_suite("gone").load(None)  # before: "prompts/gone.jsonl: not found", no word of where it was named
    (tmp_path / "prompts" / "gone.jsonl").mkdir(parents=True)
    with pytest.raises(DataError, match=r"run.toml: suites.gone: path .*gone.jsonl is a folder$"):
        get_suite("gone").load(None)


def test_dummy_refuse_words_of_another_type_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"refuse_words \(dummy backend\) must be a list of words .* got 3$"):
        settings(tmp_path, backend="dummy", backend_args={"refuse_words": 3})  # was a TypeError traceback
    with pytest.raises(ConfigError, match=r"got \[1\]$"):
        settings(tmp_path, backend="dummy", backend_args={"refuse_words": [1]})
    for words in ("bomb,poison", ["bomb"]):
        assert settings(tmp_path, backend="dummy", backend_args={"refuse_words": words}).backend_args["refuse_words"] == words


def test_a_label_store_path_naming_a_folder_is_refused(tmp_path):
    # A run reads no store where there is no file; a folder named there meant every label went unused, silently.
    with pytest.raises(ConfigError, match=r"labels .* is a folder; name the label store's SQLite file"):
        settings(tmp_path, labels=tmp_path)
    assert settings(tmp_path, labels=tmp_path / "labels.sqlite").labels == tmp_path / "labels.sqlite"


def test_an_unknown_capability_reference_is_refused_before_the_run(tmp_path):
    from harness.core.errors import DataError

    with pytest.raises(DataError, match=r"capability reference 'davinci': neither a known name \(text_davinci_003"):
        settings(tmp_path, capability_reference="davinci")  # was said only after generation, at capability scoring
    refs = write(tmp_path / "refs.json", "[]")
    assert settings(tmp_path, capability_reference=str(refs)).capability_reference == str(refs)


def test_an_unknown_backend_in_toml_names_the_file_before_the_run(tmp_path):
    config = write(tmp_path / "run.toml", 'backend = "vlm"\n')
    with pytest.raises(ConfigError, match=r"run.toml: unknown backend 'vlm' \(choose one of: auto, dummy, hf,"):
        settings(tmp_path, config)  # was said once the model was being loaded, naming no file


def test_bad_command_line_values(tmp_path):
    with pytest.raises(ConfigError, match="--limit must be an integer >= 1, got 0"):
        settings(tmp_path, limit=0)
    with pytest.raises(ConfigError, match="--max-new-tokens must be an integer >= 1, got 0"):
        settings(tmp_path, max_new_tokens=0)
    with pytest.raises(ConfigError, match=r"config file .*nope.toml not found"):
        settings(tmp_path, tmp_path / "nope.toml")
    assert settings(tmp_path, limit=1).limit == 1
    with pytest.raises(ConfigError, match=r"config file .* is a folder; name a TOML file"):  # was IsADirectoryError
        settings(tmp_path, tmp_path)
    binary = tmp_path / "weights.toml"
    binary.write_bytes(b"\x80\x81 = 1\n")
    with pytest.raises(ConfigError, match=r"weights.toml: not UTF-8 text, so not TOML"):  # was UnicodeDecodeError
        settings(tmp_path, binary)


def test_parse_backend_args():
    assert parse_backend_args(None) == {}
    assert parse_backend_args(["tensor_parallel_size=2", "enforce_eager=true", "quantization=fp8",
                               'refuse_words=["a", "b"]', "empty=", "expr=a=b", " spaced =1"]) == {
        "tensor_parallel_size": 2, "enforce_eager": True, "quantization": "fp8", "refuse_words": ["a", "b"],
        "empty": "", "expr": "a=b", "spaced": 1}
    for bad in ("novalue", "=3"):
        with pytest.raises(ConfigError, match="--backend-arg expects KEY=VALUE"):
            parse_backend_args([bad])


def test_backend_args_reach_the_backend_options(tmp_path):
    s = settings(tmp_path, backend="vllm", backend_args={"tensor_parallel_size": 2}, replay_response_column="answer",
                 batch_size=3)
    options = backend_options(s)
    # The replay column is the replay backend's own field: extra goes to vllm.LLM(**extra) untouched.
    assert options.extra == {"tensor_parallel_size": 2}
    assert options.replay_response_column == "answer"
    assert options.batch_size == 3
    assert s.public_dict()["backend_args"] == {"tensor_parallel_size": 2}
    assert all(not isinstance(v, Path) for v in s.public_dict().values())


def test_user_suites_cannot_replace_builtins_but_can_replace_each_other():
    with pytest.raises(ConfigError, match="suite 'xstest' is built in"):
        add_suite(SuiteSpec("xstest", "mine", load=lambda d: [], builtin=False))
    add_suite(SuiteSpec("settings_replaceable", "one", load=lambda d: [], builtin=False))
    add_suite(SuiteSpec("settings_replaceable", "two", load=lambda d: [], builtin=False))
    assert get_suite("settings_replaceable").description == "two"
    with pytest.raises(ConfigError, match="unknown suite 'no_such_suite'"):
        get_suite("no_such_suite")


def test_defaults_are_stated_once_on_the_options_objects():
    """Default settings give the options objects' own defaults (harness.config.options states them once)."""
    from harness.config.options import BackendOptions, ParallelOptions, SamplingConfig
    from harness.engine.preflight import parallel_options

    s = RunSettings()
    assert s.sampling == SamplingConfig()
    assert parallel_options(s) == ParallelOptions()
    assert backend_options(s) == BackendOptions()


def test_backend_args_a_backend_does_not_read_are_named_and_kept_out_of_the_cache_key(tmp_path):
    from harness.engine.preflight import preflight

    def plan(**cli):
        return preflight(build_settings(cli=cli, rootdir=tmp_path, config_file=None))

    hf = plan(backend="hf", backend_args={"quantization": "awq", "enforce_eager": True})
    assert hf.ignored_backend_args == ("enforce_eager", "quantization")
    assert hf.output_backend_args == {}  # the replies were not made with them: their cache key must not say so
    vllm = plan(backend="vllm", backend_args={"quantization": "awq"})
    assert vllm.ignored_backend_args == () and vllm.output_backend_args == {"quantization": "awq"}
    dummy = plan(backend="dummy", backend_args={"refuse_words": ["bomb"], "quantization": "awq"})
    assert dummy.ignored_backend_args == ("quantization",)
    assert dummy.output_backend_args == {"refuse_words": ["bomb"]}
