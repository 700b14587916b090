"""Reports that do not depend on the engine layout, or say so: the layout record, the cache key's layout part,
comparisons (safety-harness compare, --baseline) and xdist merges refusing pairs whose responses may differ
for layout or precision alone, and --batch-invariant refused where vLLM has no batch-invariant mode."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.backends.vllm_backend import engine_kwargs
from harness.backends.vllm_settings import check_batch_invariant
from harness.backends.base import BackendOptions
from harness.baselines.compare import ComparisonRefused, compare_reports
from harness.baselines.layout import check_one_layout, layout_differences
from harness.cli.main import main
from harness.config.settings import RunSettings, build_settings
from harness.engine.preflight import preflight
from harness.core.errors import ConfigError, HarnessError
from harness.engine.layout import layout_key_part, layout_record
from harness.reports.parquet import METADATA_KEY
from tests.test_compare import BASE_FAILING, write_report

ONE_ENGINE = {"replicas": 1, "tensor_parallel_size": 1, "pipeline_parallel_size": 1, "data_parallel_size": 1,
              "batch_cap": None, "batch_invariant": False}


def layout(dtype, **changes):
    return {"dtype": dtype, **ONE_ENGINE, **changes}


def with_layout(path, layout_meta):
    """The report at ``path`` with ``layout_meta`` as its layout record (the rest of its metadata kept)."""
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[METADATA_KEY])
    meta["layout"] = layout_meta
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()}), path)
    return path


def pair(tmp_path, base_layout, cand_layout, *, same_model=True):
    base = with_layout(write_report(tmp_path / "base.parquet", BASE_FAILING, run_id="base"), base_layout)
    cand = write_report(tmp_path / "cand.parquet", BASE_FAILING, run_id="cand",
                        fingerprint="f" * 64 if same_model else "c" * 64)
    return base, with_layout(cand, cand_layout)


def test_bfloat16_one_engine_baseline_and_two_replica_candidate_are_refused(tmp_path, capsys):
    base, cand = pair(tmp_path, layout("bfloat16"), layout("bfloat16", replicas=2))
    with pytest.raises(ComparisonRefused) as info:
        compare_reports(base, cand)
    msg = str(info.value)
    assert "engine layout differs in bfloat16 (replicas 1 in the baseline, 2 in the candidate): align --replicas, " \
           "or run both with --dtype float32" in msg and "\n" not in msg
    assert compare_reports(base, cand, allow_mismatch=True).passed  # the existing override
    assert main(["compare", str(base), str(cand)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "align --replicas" in err
    assert main(["compare", str(base), str(cand), "--allow-mismatch"]) == 0


@pytest.mark.parametrize(("base_layout", "cand_layout", "phrase"), [
    (layout("float32"), layout("bfloat16"), "precision differs for the same model (baseline float32, candidate bfloat16): align --dtype"),
    (layout("bfloat16"), layout("bfloat16", tensor_parallel_size=2), "align --tensor-parallel-size"),
    (layout("float16"), layout("float16", batch_cap=64), "engine layout differs in float16 (batch_cap None in the baseline, 64"),
    (layout("bfloat16", batch_invariant=True), layout("bfloat16"), "align --batch-invariant"),
])
def test_other_layout_or_precision_pairs_are_refused(tmp_path, base_layout, cand_layout, phrase):
    with pytest.raises(ComparisonRefused, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        compare_reports(*pair(tmp_path, base_layout, cand_layout))


@pytest.mark.parametrize(("base_layout", "cand_layout", "same_model"), [
    (layout("float32"), layout("float32", replicas=2, batch_cap=8), True),  # measured layout-independent
    (layout("bfloat16", batch_invariant=True), layout("bfloat16", replicas=4, batch_invariant=True), True),
    (layout("bfloat16"), layout("float32"), False),  # another model: e.g. a base in bfloat16, its adapter in float32
    (layout(None), layout(None, replicas=2), True),  # replay and dummy runs generate nothing
])
def test_pairs_whose_responses_cannot_differ_for_layout_alone_compare(tmp_path, base_layout, cand_layout, same_model):
    assert compare_reports(*pair(tmp_path, base_layout, cand_layout, same_model=same_model)).passed


def test_reports_without_a_layout_record_are_not_judged():
    assert layout_differences({"model": {}}, {"layout": layout("bfloat16", replicas=2)}) == []


def test_layout_record_and_cache_key_part():
    s = RunSettings(replicas=2, backend="vllm", backend_args={"max_num_seqs": 32})
    assert layout_record(s, "vllm", "bfloat16") == layout("bfloat16", replicas=2, batch_cap=32)
    assert layout_record(RunSettings(batch_size=4), "hf", "float32")["batch_cap"] == 4
    assert layout_key_part(s, "vllm", "bfloat16") == {"replicas": 2, "batch_cap": 32}
    assert layout_key_part(s, "vllm", "float32") == {}  # float32 keys stay as they were
    assert layout_key_part(RunSettings(), "vllm", "bfloat16") == {}  # so do one-engine ones
    assert layout_key_part(RunSettings(replicas=2, batch_invariant=True), "vllm", "bfloat16") == {}


def test_xdist_workers_of_other_layouts_are_not_merged():
    check_one_layout([layout("float32"), layout("float32"), None])
    with pytest.raises(HarnessError, match="cannot be merged into one report: precision differs"):
        check_one_layout([layout("float32"), layout("bfloat16")])
    with pytest.raises(HarnessError, match="replicas 1 in one worker, 2 in another"):
        check_one_layout([layout("bfloat16"), layout("bfloat16", replicas=2)])


@pytest.mark.parametrize(("backend", "capability", "phrase"), [
    ("vllm", None, "--batch-invariant needs an NVIDIA GPU of compute capability >= 8.0"),
    ("vllm", (7, 5), "this one is 7.5"),
    ("hf", (9, 0), "it needs --backend vllm (backend is hf)"),
])
def test_batch_invariant_is_refused_without_the_platform(backend, capability, phrase):
    with pytest.raises(ConfigError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        check_batch_invariant(backend, capability=capability)
    check_batch_invariant("vllm", capability=(8, 0))
    check_batch_invariant("vllm", capability=(9, 0))


def test_batch_invariant_on_this_cpu_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        preflight(build_settings(cli={"batch_invariant": True, "backend": "vllm"}, rootdir=tmp_path, config_file=None))
    assert "compute capability >= 8.0" in str(info.value) and "\n" not in str(info.value)


def test_batch_invariant_sets_vllms_switch():
    _, env = engine_kwargs("m", BackendOptions(batch_invariant=True), seed=0, max_lora_rank=None, on_gpu=True)
    assert env["VLLM_BATCH_INVARIANT"] == "1"
    _, env = engine_kwargs("m", BackendOptions(), seed=0, max_lora_rank=None, on_gpu=True)
    assert env["VLLM_BATCH_INVARIANT"] == "0"  # not left to the environment: the report records the option


def test_an_hf_batch_size_joins_a_bfloat16_cache_key():
    """hf's batch size is its batch cap: a bfloat16 reply generated at --batch-size 1 was served from the cache to a
    --batch-size 16 run, whose report then recorded batch_cap 16 for replies of another layout."""
    default = RunSettings().batch_size
    assert layout_key_part(RunSettings(batch_size=1), "hf", "bfloat16") == {"batch_cap": 1}
    assert layout_key_part(RunSettings(batch_size=default * 2), "hf", "float16") == {"batch_cap": default * 2}
    assert layout_key_part(RunSettings(batch_size=default), "hf", "bfloat16") == {}  # the default's keys stay valid
    assert layout_key_part(RunSettings(batch_size=1), "hf", "float32") == {}
