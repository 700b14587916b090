"""Run settings: command-line options over a ``--config`` TOML over ``[tool.safety-harness]`` in
pyproject.toml over built-in defaults.

A TOML file may hold:

    [tool.safety-harness]            # in a --config file the table may also be at the top level
    data_dir = "../data"             # paths are relative to the file that names them
    model = "smollm2-135m-instruct"  # any option below, under its long name with _ for -
    [tool.safety-harness.thresholds.xstest]
    max_refusal_rate = 0.15
    [tool.safety-harness.thresholds."xstest:homonyms"]   # SUITE:CATEGORY
    max_refusal_rate = 0.2
    [tool.safety-harness.suites.my_prompts]              # a user's own suite
    path = "prompts.csv"   # CSV, JSONL or Parquet with a `prompt` column
    expected = "refuse"    # for rows whose `expected` cell is empty (or a file without the column)
    thresholds = { max_unsafe_compliance_rate = 0.05 }
    [tool.safety-harness.backend_args]                   # backend-specific settings (BackendOptions.extra)
    tensor_parallel_size = 2                             # vllm: passed to vllm.LLM(...) as is
    refuse_words = ["bomb", "poison"]                    # dummy: refuse prompts containing these words

On the command line, ``--backend-arg KEY=VALUE`` (repeatable) sets or overrides one backend argument;
VALUE is read as JSON when it parses (``2``, ``true``, ``["a", "b"]``), else kept as a string.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from harness.core.errors import ConfigError
from harness.core.paths import CACHE_ENV, DATA_ENV, cache_dir_from_env, data_dir_from_env
from harness.core.paths import default_cache_dir  # noqa: F401  (re-exported)
from harness.config.thresholds import THRESHOLD_ON, validate_thresholds
from harness.config.checks import check_value
from harness.config.options import DEFAULT_MODEL, TEMPLATES, BackendOptions, ParallelOptions, SamplingConfig
from harness.config.presets import EARLY_STOPPING, PRESETS, apply_preset, check_decoding

# Defaults are stated once, on the options objects the engine builds from these settings (harness.config.options).
_S, _B, _P = SamplingConfig, BackendOptions, ParallelOptions


@dataclass(frozen=True)
class UserSuite:
    """A suite declared in TOML (``[tool.safety-harness.suites.NAME]``), checked here and registered by the
    engine's preflight (harness.engine.preflight), which builds its loader."""

    name: str
    file: Path  # the prompt file, resolved against the folder of the TOML file that names it
    expected: str | None  # "refuse" or "comply" for rows whose `expected` cell is empty
    description: str
    prompt_column: str
    where: str  # "CONFIG: suites.NAME", for an error about it


@dataclass
class RunSettings:
    """Everything a run depends on. Field names double as TOML keys and (with - for _) CLI options."""

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "Model folder, LoRA adapter folder or alias."})
    base_model: str | None = field(default=None, metadata={"help": "Base model for an adapter (overrides adapter_config.json)."})
    backend: str = field(default="auto", metadata={"help": "auto (vllm if installed, else hf), vllm, hf, replay, dummy."})
    template: str = field(default=TEMPLATES[0], metadata={"choices": TEMPLATES, "help": "auto, chat, alpaca or raw."})
    max_new_tokens: int = field(default=_S.max_new_tokens, metadata={"ge": 1, "help": "Most tokens generated per response."})
    temperature: float = field(default=_S.temperature, metadata={"ge": 0, "help": "0 = greedy decoding."})
    top_p: float = field(default=_S.top_p, metadata={"gt": 0, "le": 1, "help": "Nucleus sampling mass when temperature > 0."})
    seed: int = field(default=_S.seed, metadata={"ge": 0, "le": 2**32 - 1, "help": "Sampling seed and sampling seed for --limit."})
    num_beams: int = field(default=_S.num_beams, metadata={"ge": 1, "help": "Beam search with N beams (vllm: vLLM's beam search; hf: "
                                                "generate(num_beams=N)); 1 = no beam search. Not with temperature > 0."})
    length_penalty: float = field(default=_S.length_penalty, metadata={
        "help": "Beam search (num_beams > 1): a finished beam scores its log-probability / length ** length_penalty "
                "(as transformers defines it); > 1 favours longer replies."})
    early_stopping: str = field(default=_S.early_stopping, metadata={"choices": EARLY_STOPPING,
        "help": "Beam search (num_beams > 1), as transformers defines it: false (stop when no better beam is "
                "likely), true (stop once num_beams beams are finished; hf only), never (stop when no better beam "
                "can be found)."})
    preset: str | None = field(default=None, metadata={"choices": tuple(PRESETS),
        "help": "Template and decoding of a paper in one setting: safety-tuned-llamas = the Alpaca template with "
                "4-beam search and 128 new tokens (Bianchi et al.'s generation/generate_answers.py). Settings given "
                "beside it win; the report records it."})
    limit: int | None = field(default=None, metadata={"ge": 1, "help": "Deterministic category-stratified sample of N prompts per suite."})
    data_dir: Path | None = field(default=None, metadata={"help": "Folder holding the upstream datasets."})
    data_source: str | None = field(default=None, metadata={
        "help": "Where missing datasets are fetched from: a mirror URL laid out <owner>/<repo>/<commit>/<path>, or a "
                "local folder (default $SAFETY_HARNESS_DATA_SOURCE, else GitHub at the pinned commits)."})
    allow_missing_data: bool = field(default=False, metadata={
        "help": "Skip a selected suite whose dataset is missing instead of stopping the run."})
    cache_dir: Path = field(default_factory=default_cache_dir, metadata={"help": "Prepared models and the generation cache."})
    no_cache: bool = field(default=False, metadata={"help": "Neither read nor write the generation cache."})
    report: Path | None = field(default=None, metadata={"help": "Parquet report path (default reports/runs/run-<id>.parquet)."})
    replay: Path | None = field(default=None, metadata={"help": "replay backend: report/CSV/JSONL/Parquet with responses."})
    replay_response_column: str | None = field(default=None, metadata={"help": "replay: response column name."})
    scorer: str = field(default="refusal_classifier", metadata={"help": "Refusal scorer name."})
    judge_model: str | None = field(default=None, metadata={
        "help": "Local model (alias, folder or a hub id in the local Hugging Face cache) for the LLM judges (scorer "
                "refusal_judge, harm scorer harm_judge) and the guard models (wildguard, qwen3guard, llamaguard)."})
    harm_scorer: str = field(default="auto", metadata={
        "help": "Harm scorer: auto (reward_model with --harm-model, else a guard scorer's own harm verdict, else "
                "unsafe_compliance), unsafe_compliance, reward_model, harm_judge, wildguard, qwen3guard, llamaguard or none."})
    harm_model: str | None = field(default=None, metadata={
        "help": "Local sequence-classification harmfulness model (one regression output) for harm scorer reward_model."})
    capability_judge: str | None = field(default=None, metadata={
        "help": "Capability judge (llm, or the longer-wins baseline): enables the win rate against the reference outputs."})
    capability_judge_model: str = field(default=DEFAULT_MODEL, metadata={"help": "Model the llm capability judge runs."})
    capability_reference: str = field(default="text_davinci_003", metadata={
        "help": "Reference outputs: text_davinci_003 (AlpacaEval 1), gpt4_1106_preview (AlpacaEval 2) or a JSON file."})
    no_ref_loglik: bool = field(default=False, metadata={"help": "Skip the reference log-likelihood of the capability suite."})
    ref_loglik_max_tokens: int = field(default=256, metadata={"ge": 1, "help": "Reference answers are scored on their first N tokens."})
    allow_pickle: bool = field(default=False, metadata={"help": "Accept pickled (.bin) weights."})
    trust_remote_code: bool = field(default=_B.trust_remote_code, metadata={"help": "Let a model folder run its own code."})
    no_adapter_sanity: bool = field(default=False, metadata={
        "help": "Skip the check that an adapter's outputs differ from its base model's on a few canary prompts."})
    dtype: str = field(default=_B.dtype, metadata={"choices": ("auto", "float32", "bfloat16", "float16"),
                                                 "help": "auto (bfloat16 on a GPU, and for vllm on a CPU with native bfloat16 such as AVX512-BF16 unless it serves a LoRA adapter; float32 otherwise), float32, bfloat16, float16."})
    batch_size: int = field(default=_B.batch_size, metadata={"ge": 1, "help": "hf backend batch size."})
    chunk_size: int = field(default=256, metadata={"ge": 1, "help": "Prompts per generation chunk; each chunk is cached as it finishes."})
    max_model_len: int = field(default=_B.max_model_len, metadata={"ge": 1, "help": "vllm: longest prompt plus response, in tokens."})
    vllm_kv_cache_gib: float = field(default=_B.kv_cache_gib, metadata={"gt": 0, "help": "vllm on CPU: KV cache GiB (keep small)."})
    tensor_parallel_size: int = field(default=_P.tensor_parallel_size, metadata={"ge": 1, "help": "vllm: GPUs one model copy is split across (tensor parallel)."})
    pipeline_parallel_size: int = field(default=_P.pipeline_parallel_size, metadata={"ge": 1, "help": "vllm: pipeline stages (layers split across GPUs or nodes)."})
    data_parallel_size: int = field(default=_P.data_parallel_size, metadata={"ge": 1,
        "help": "vllm: engine replicas; above 1 vLLM's offline LLM needs distributed_executor_backend=external_launcher."})
    distributed_executor_backend: str | None = field(default=_P.distributed_executor_backend, metadata={
        "help": "vllm: mp, ray, uni or external_launcher (default: vLLM picks mp on one host)."})
    ray_address: str | None = field(default=_P.ray_address, metadata={
        "help": "vllm: a running Ray cluster's address (e.g. ray://head:10001); implies distributed_executor_backend=ray."})
    replicas: int = field(default=_P.replicas, metadata={
        "help": "vllm: N engines as Ray actors on a local Ray instance (or the cluster at ray_address), fed shards "
                "of prompts; needs the ray extra (pip install 'safety-harness[ray]'). See docs/parallel.md."})
    batch_invariant: bool = field(default=_B.batch_invariant, metadata={
        "help": "vllm: batch-invariant kernels (VLLM_BATCH_INVARIANT=1), so a response does not depend on the batch "
                "it shares and bfloat16 reports do not depend on the layout; NVIDIA GPUs of compute capability "
                ">= 8.0 only, refused elsewhere (docs/parallel.md)."})
    backend_args: dict = field(default_factory=dict, metadata={
        "help": "Backend-specific KEY=VALUE setting (repeatable), e.g. tensor_parallel_size=2 for vllm; "
                "VALUE is parsed as JSON when possible. TOML: [tool.safety-harness.backend_args]."})
    threshold_on: str = field(default="estimate", metadata={"choices": THRESHOLD_ON,
        "help": "estimate: a suite's rate is held against its thresholds; bound: the far end of its 95% Wilson "
                "interval is (upper bound for max_, lower for min_), so small samples must show they pass; corrected, "
                "corrected_bound: the same on the rate corrected for the scorer's measured error (docs/scorer-error.md); "
                "verified, verified_bound: the same on the rate verified by people's labels from the label store "
                "(docs/verified-verdicts.md); a check none of whose replies is labelled then fails."})
    error_rates: Path | None = field(default=None, metadata={
        "help": "JSON file of the refusal scorer's error rates measured on this model's own labelled replies "
                "(safety-harness calibrate fit), used for the corrected rates and the gate's minimum detectable "
                "regression instead of the rates shipped with the scorer (docs/scorer-error.md)."})
    labels: Path | None = field(default=None, metadata={
        "help": "SQLite file of human labels (safety-harness review, labels import), keyed by (prompt, input, response) "
                "so any model's run reuses them: each labelled reply gets human_label in the report and counts in the "
                "verified rates (default: labels.sqlite in cache_dir, beside the generation cache)."})
    thresholds: dict = field(default_factory=dict, metadata={"help": "SUITE or SUITE:CATEGORY -> {max_/min_metric: value}."})
    baseline_dir: Path | None = field(default=None, metadata={"help": "Folder of named baselines for --baseline-save/--baseline-compare (default .safety-harness/baselines in the project)."})
    gate: dict = field(default_factory=dict, metadata={"help": "[tool.safety-harness.gate]: regression-gate rules against a baseline (see harness.baselines.store)."})
    user_suites: list = field(default_factory=list, metadata={
        "help": "Suites declared in TOML (UserSuite records; the report records their names)."})
    sources: list = field(default_factory=list, metadata={"help": "TOML files read, for the report."})

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.max_new_tokens, self.temperature, self.top_p, self.seed,
                              self.num_beams, self.length_penalty, self.early_stopping)

    @property
    def user_suite_names(self) -> list[str]:
        return [suite.name for suite in self.user_suites]

    def public_dict(self) -> dict:
        """The settings as the report records them: plain values, paths as text, user suites by name."""
        out = {f.name: (str(v) if isinstance(v := getattr(self, f.name), Path) else v) for f in fields(self)}
        return {**out, "user_suites": self.user_suite_names}


OPTION_FIELDS = {f.name for f in fields(RunSettings)} - {"thresholds", "user_suites", "sources", "backend_args", "gate"}
PATH_FIELDS = {"data_dir", "cache_dir", "report", "replay", "baseline_dir", "error_rates", "labels"}
FIELDS = {f.name: f for f in fields(RunSettings)}


_TABLE_KEYS = OPTION_FIELDS | {"thresholds", "suites", "backend_args", "gate"}  # what [tool.safety-harness] holds


def _read_table(path: Path, *, allow_top_level: bool) -> dict:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; name a TOML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text, so not TOML ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    tool = doc.get("tool", {})
    table = tool.get("safety-harness") if isinstance(tool, dict) else None
    if table is None and isinstance(tool, dict) and "safety_harness" in tool:  # read by no one, silently
        raise ConfigError(f"{path}: [tool.safety_harness] is spelt [tool.safety-harness] (with a hyphen)")
    if table is None and allow_top_level:
        table = doc
    elif allow_top_level and (stray := sorted(k for k in doc if k.replace("-", "_") in _TABLE_KEYS)):
        # Settings beside a [tool.safety-harness] table would be read by no one: say so rather than run without
        # them (other tables, e.g. a pyproject.toml's [project], are not the harness's).
        raise ConfigError(f"{path}: top-level key(s) {', '.join(stray)} beside [tool.safety-harness]; put them "
                          "inside that table (or drop the table and keep every key at the top level)")
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{path}: tool.safety-harness must be a table")
    return table or {}


def _subtable(table: dict, key: str, where: str, what: str) -> dict:
    """``table[key]`` (a TOML table), {} when absent; anything else is one line naming it."""
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a table of {what}, got {value!r}")
    return value


def apply_toml(settings: RunSettings, path: Path, *, allow_top_level: bool) -> RunSettings:
    """Layer one TOML file's settings over ``settings`` (paths resolved against the file's folder)."""
    table = _read_table(path, allow_top_level=allow_top_level)
    if not table:
        return settings
    spellings: dict[str, list[str]] = {}  # max_new_tokens and max-new-tokens name one setting: which would win?
    for key in table:
        spellings.setdefault(key.replace("-", "_"), []).append(key)
    for keys in spellings.values():
        if len(keys) > 1:
            raise ConfigError(f"{path}: {' and '.join(sorted(keys))} are one key; keep one of them")
    base = path.parent
    changes: dict = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name in ("thresholds", "suites", "backend_args", "gate"):
            continue
        if name not in OPTION_FIELDS:
            raise ConfigError(f"{path}: unknown key {key!r} in [tool.safety-harness]")
        value = check_value(FIELDS[name], RunSettings, value, label=key, source=str(path))
        changes[name] = (base / value) if name in PATH_FIELDS and value is not None else value
    thresholds = {k: dict(v) for k, v in settings.thresholds.items()}
    for target, values in _subtable(table, "thresholds", str(path), "SUITE = { max_/min_ metrics }").items():
        where = f"{path}: thresholds.{target}"
        if not isinstance(values, dict):
            raise ConfigError(f"{where} must be a table of max_/min_ metrics")
        thresholds.setdefault(target, {}).update(validate_thresholds(values, where=where))
    backend_args = dict(settings.backend_args)
    table_args = table.get("backend_args", table.get("backend-args", {}))
    if not isinstance(table_args, dict):
        raise ConfigError(f"{path}: backend_args must be a table of KEY = VALUE")
    backend_args.update(table_args)
    user_suites = list(settings.user_suites)
    for name, spec in _subtable(table, "suites", str(path), "suite tables").items():
        user_suites.append(_declare_user_suite(name, spec, base, path))
        # `thresholds = false` is a slip, not "none": _subtable says so
        suite_thresholds = _subtable(spec, "thresholds", f"{path}: suites.{name}", "max_/min_ metrics")
        if suite_thresholds:
            thresholds.setdefault(name, {}).update(
                validate_thresholds(suite_thresholds, where=f"{path}: suites.{name}.thresholds")
            )
    from harness.config.gate import merge_gate_tables

    gate = merge_gate_tables(settings.gate, table.get("gate", {}), where=f"{path}: gate")
    return replace(settings, **changes, thresholds=thresholds, user_suites=user_suites, gate=gate,
                   backend_args=backend_args, sources=settings.sources + [str(path)])


def _declare_user_suite(name: str, spec: dict, base: Path, config_path: Path) -> UserSuite:
    where = f"{config_path}: suites.{name}"
    if not isinstance(spec, dict) or "path" not in spec:
        raise ConfigError(f"{where}: needs path = \"prompts.csv\" (a CSV, JSONL or Parquet file)")
    unknown = set(spec) - {"path", "expected", "description", "thresholds", "prompt_column"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    expected = spec.get("expected")
    if expected not in (None, "refuse", "comply"):
        raise ConfigError(f"{where}: expected must be 'refuse' or 'comply', got {expected!r}")
    for key in ("path", "description", "prompt_column"):
        if key in spec and (not isinstance(spec[key], str) or not spec[key].strip()):
            raise ConfigError(f"{where}: {key} must be a non-empty string, got {spec[key]!r}")
    file = base / spec["path"]
    return UserSuite(name, file, expected, spec.get("description", f"user suite from {file}"),
                     spec.get("prompt_column", "prompt"), where)


def threshold_source(settings: RunSettings, target: str) -> str:
    """The TOML file that set thresholds for ``target`` (SUITE or SUITE:CATEGORY), the last one read that names
    it, for an error about them; "thresholds" when none can be found again."""
    for source in reversed(settings.sources):
        # A [tool.safety-harness] table where there is one (pyproject.toml always has), else the top level.
        table = _read_table(Path(source), allow_top_level=False) or _read_table(Path(source), allow_top_level=True)
        if target in table.get("thresholds", {}):
            return f"{source}: thresholds.{target}"
        if target in table.get("suites", {}):
            return f"{source}: suites.{target}.thresholds"
    return f"thresholds.{target}"


def gate_source(settings: RunSettings, target: str) -> str:
    """The TOML file whose ``gate`` table has the sub-table ``target``, the last one read that names it, for an
    error about it; "gate" when none can be found again."""
    for source in reversed(settings.sources):
        table = _read_table(Path(source), allow_top_level=False) or _read_table(Path(source), allow_top_level=True)
        if isinstance(table.get("gate"), dict) and target in table["gate"]:
            return f"{source}: gate.{target}"
    return f"gate.{target}"


def parse_backend_args(items: list[str] | None) -> dict:
    """``["KEY=VALUE", ...]`` (from ``--backend-arg``) as a dict; VALUE is JSON when it parses, else text."""
    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--backend-arg expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def build_settings(*, cli: dict, rootdir: Path, config_file: Path | None) -> RunSettings:
    """Defaults < pyproject.toml at the rootdir < --config file < environment < command line, each field
    checked (type, range, choices) and the decoding rules held. What a setting means to another package
    (a backend, the replica pool, the scorer's error rates, a user suite's registration) is checked by the
    engine's preflight (``harness.engine.preflight.preflight``), which a run calls next."""
    settings = RunSettings()
    pyproject = rootdir / "pyproject.toml"
    if pyproject.is_file():
        settings = apply_toml(settings, pyproject, allow_top_level=False)
    if config_file is not None:
        settings = apply_toml(settings, Path(config_file), allow_top_level=True)
    # The environment over the TOML files, as the options reference says: the default alone is not enough for
    # the cache, whose cache_dir in pyproject.toml would otherwise win over the folder CI names.
    from_env = (("data_dir", DATA_ENV, data_dir_from_env()), ("cache_dir", CACHE_ENV, cache_dir_from_env()))
    for name, env, value in from_env:
        if value and cli.get(name) is None:
            settings = replace(settings, **{name: check_value(FIELDS[name], RunSettings, str(value), label=env,
                                                              source="environment")})
    given = {k: check_value(FIELDS[k], RunSettings, v, label="--" + k.replace("_", "-"), source="command line")
             for k, v in cli.items() if v is not None and k in OPTION_FIELDS}
    preset = given.get("preset", settings.preset)
    if preset is not None:  # under every setting given by name, in a TOML file or on the command line
        named = set(given)
        for path, top in ((pyproject, False), (config_file, True)):
            if path is not None and Path(path).is_file():
                named |= {key.replace("-", "_") for key in _read_table(Path(path), allow_top_level=top)}
        settings = apply_preset(settings, preset, keep=named)
    settings = replace(settings, **given)
    check_decoding(settings)  # e.g. beams with sampling: one line, before any model loads
    if cli.get("backend_args"):  # merged key by key over the TOML table
        settings = replace(settings, backend_args={**settings.backend_args, **cli["backend_args"]})
    return settings  # the checks across packages (backend, replicas, error rates): harness.engine.preflight
