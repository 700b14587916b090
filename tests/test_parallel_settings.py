"""Multi-device vLLM settings: from the command line and TOML to the kwargs of ``vllm.LLM`` (checked
without starting an engine), their validation, the cache key and the report metadata."""

from __future__ import annotations

import sys
import types

import pytest

from harness.backends import vllm_backend, vllm_settings
from harness.backends.base import BackendOptions, generation_dtype
from harness.core.errors import BackendError, ConfigError
from harness.config.settings import build_settings
from harness.engine.preflight import backend_options, output_backend_args, preflight
from harness.reports.parquet import read_report


def settings(tmp_path, toml: str = "", **cli):
    (tmp_path / "pyproject.toml").write_text("[tool.safety-harness]\n" + toml)
    return preflight(build_settings(cli={"backend": "vllm", **cli}, rootdir=tmp_path, config_file=None)).settings


def kwargs_of(s, on_gpu=False):
    return vllm_backend.engine_kwargs("/m", backend_options(s), seed=0, max_lora_rank=None, on_gpu=on_gpu)


def test_first_class_options_reach_vllm_llm(tmp_path):
    s = settings(tmp_path, tensor_parallel_size=2, pipeline_parallel_size=2, distributed_executor_backend="mp")
    kwargs, env = kwargs_of(s, on_gpu=True)
    assert (kwargs["tensor_parallel_size"], kwargs["pipeline_parallel_size"]) == (2, 2)
    assert kwargs["distributed_executor_backend"] == "mp" and "data_parallel_size" not in kwargs
    assert "RAY_ADDRESS" not in env
    assert s.public_dict()["tensor_parallel_size"] == 2  # what the report's metadata records


def test_one_device_run_passes_no_parallel_kwargs_and_keeps_its_cache_key(tmp_path):
    s = settings(tmp_path)
    kwargs, _ = kwargs_of(s, on_gpu=True)
    assert not set(vllm_settings.PARALLEL_FIELDS) & set(kwargs)
    assert output_backend_args(s) == {}  # so keys written before these options existed stay valid


def test_one_cpu_engine_runs_in_this_process_uncompiled_and_a_split_one_keeps_vllms_processes(tmp_path):
    kwargs, env = kwargs_of(settings(tmp_path))
    assert (kwargs["distributed_executor_backend"], kwargs["enforce_eager"]) == ("uni", True)
    assert (env["VLLM_ENABLE_V1_MULTIPROCESSING"], env["VLLM_CPU_OMP_THREADS_BIND"]) == ("0", "nobind")
    kwargs, env = kwargs_of(settings(tmp_path, tensor_parallel_size=2, distributed_executor_backend="mp"))
    assert kwargs["distributed_executor_backend"] == "mp" and kwargs["enforce_eager"] is True
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in env and "VLLM_CPU_OMP_THREADS_BIND" not in env
    kwargs, env = kwargs_of(settings(tmp_path, backend_args={"enforce_eager": False}))
    assert kwargs["enforce_eager"] is False  # the user's choice wins: compiled, on a machine where it pays
    assert output_backend_args(settings(tmp_path)) == {}  # none of this joins the cache key


def test_toml_ray_address_implies_ray_and_becomes_the_environment(tmp_path):
    s = settings(tmp_path, 'ray_address = "ray://head:10001"\ntensor_parallel_size = 4\n')
    assert s.distributed_executor_backend == "ray"
    kwargs, env = kwargs_of(s, on_gpu=True)
    assert env["RAY_ADDRESS"] == "ray://head:10001" and "ray_address" not in kwargs
    assert kwargs["distributed_executor_backend"] == "ray" and kwargs["tensor_parallel_size"] == 4


def test_backend_arg_spelling_is_adopted_and_gives_the_same_cache_key(tmp_path):
    first = settings(tmp_path, tensor_parallel_size=2)
    second = settings(tmp_path, backend_args={"tensor_parallel_size": 2})
    assert second.tensor_parallel_size == 2 and second.backend_args == {"tensor_parallel_size": 2}
    assert output_backend_args(first) == output_backend_args(second) == {"tensor_parallel_size": 2}


def test_only_output_changing_settings_join_the_cache_key(tmp_path):
    s = settings(tmp_path, tensor_parallel_size=2, pipeline_parallel_size=3, distributed_executor_backend="ray")
    assert output_backend_args(s) == {"tensor_parallel_size": 2, "pipeline_parallel_size": 3}


@pytest.mark.parametrize("cli, message", [
    ({"tensor_parallel_size": 0}, "command line: --tensor-parallel-size must be an integer >= 1, got 0"),
    ({"backend_args": {"pipeline_parallel_size": "two"}}, "pipeline_parallel_size must be a whole number"),
    ({"distributed_executor_backend": "slurm"}, "distributed_executor_backend must be one of mp, ray"),
    ({"ray_address": "auto", "distributed_executor_backend": "mp"}, "ray_address needs distributed_executor_backend=ray"),
    ({"data_parallel_size": 2}, "data_parallel_size > 1: vLLM's offline LLM runs replicas only with"),
    ({"tensor_parallel_size": 2, "backend_args": {"tensor_parallel_size": 4}}, "tensor_parallel_size is set twice"),
    ({"tensor_parallel_size": 2, "backend": "hf"}, "tensor_parallel_size applies to the vllm backend only"),
])
def test_bad_parallel_settings_are_one_line_config_errors(tmp_path, cli, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as info:
        settings(tmp_path, **cli)
    assert "\n" not in str(info.value)


def test_data_parallel_with_external_launcher_passes_through(tmp_path):
    s = settings(tmp_path, data_parallel_size=2, distributed_executor_backend="external_launcher")
    assert kwargs_of(s)[0]["data_parallel_size"] == 2


def test_more_devices_than_visible_gpus_is_a_clear_error_unless_ray_spans_hosts():
    with pytest.raises(BackendError, match="= 4 needs 4 GPUs on this host, 1 visible"):
        vllm_settings.check_devices({"tensor_parallel_size": 2, "pipeline_parallel_size": 2}, 1)
    vllm_settings.check_devices({"tensor_parallel_size": 8, "distributed_executor_backend": "ray"}, 1)


def test_get_engine_hands_the_kwargs_to_vllm_llm(monkeypatch):
    """A stand-in ``vllm`` module records the call that would start the engine (nothing is started)."""
    seen = {}
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=lambda **kw: seen.update(kw) or object()))
    monkeypatch.setattr(vllm_backend, "_ENGINES", {})
    monkeypatch.setattr(vllm_backend, "on_gpu_platform", lambda: False)
    options = BackendOptions(extra={"tensor_parallel_size": 2, "distributed_executor_backend": "mp"})
    vllm_backend.get_engine("/m", options, seed=3, max_lora_rank=None)
    assert seen["tensor_parallel_size"] == 2 and seen["distributed_executor_backend"] == "mp" and seen["seed"] == 3


@pytest.mark.vllm
def test_a_parallel_size_the_model_cannot_take_is_refused_by_real_vllm_in_one_line(tiny_model, monkeypatch):
    """The real ``vllm.LLM`` receives tensor_parallel_size=3 and checks it against the model (4 attention heads)
    before it starts any process: its reason, with the size it received, comes back as one BackendError."""
    monkeypatch.setattr(vllm_backend, "_ENGINES", {})
    for name in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_USE_AOT_COMPILE"):  # get_engine sets them for the engine
        monkeypatch.delenv(name, raising=False)
    options = BackendOptions(max_model_len=256, extra={"tensor_parallel_size": 3})
    with pytest.raises(BackendError) as caught:
        vllm_backend.get_engine(str(tiny_model), options, seed=0, max_lora_rank=None)
    message = str(caught.value)
    dtype = generation_dtype("vllm", options.dtype, on_gpu=False)  # bfloat16 on a CPU with native bf16, else float32
    assert message == (f"vLLM refused the engine settings for {tiny_model}: Total number of attention heads (4) must "
                       f"be divisible by tensor parallel size (3). (given: dtype={dtype}, max_model_len=256, "
                       "tensor_parallel_size=3)")
    assert vllm_backend._ENGINES == {}


def test_cli_options_reach_the_report_metadata(harness_project):
    harness_project.write('[tool.safety-harness.suites.p]\npath = "p.csv"\nexpected = "comply"\n',
                          files={"p.csv": "prompt\nhello\n"},
                          tests={"test_p": "from harness.api import test_configured_suite  # noqa: F401\n"})
    bad = harness_project.run("--backend", "dummy", "--tensor-parallel-size", "2")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "tensor_parallel_size applies to the vllm backend only" in harness_project.text(bad)
    ok = harness_project.run("--backend", "dummy")
    _, meta = read_report(harness_project.report)
    assert ok.ret == 0 and meta["settings"]["tensor_parallel_size"] == 1 and "ray_address" in meta["settings"]


# -- precision on CPU: bfloat16 where the CPU computes in it natively (vLLM only) ----------------------------
CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {extra}\n\nprocessor\t: 1\n"


@pytest.mark.parametrize("extra, native", [("avx512_bf16 avx512_vnni", True), ("amx_bf16 amx_tile", True),
                                           ("avx512_vnni", False), ("", False)])
def test_native_bf16_is_read_from_the_cpu_flags(extra, native):
    from harness.backends.base import cpu_has_native_bf16

    assert cpu_has_native_bf16(CPUINFO.format(extra=extra)) is native
    assert cpu_has_native_bf16("no flags line at all") is False


def test_auto_precision_by_backend_and_device():
    from harness.backends.base import generation_dtype

    assert generation_dtype("vllm", "auto", on_gpu=False, native_bf16=True) == "bfloat16"
    assert generation_dtype("vllm", "auto", on_gpu=False, native_bf16=False) == "float32"  # emulated bf16 is slower
    assert generation_dtype("hf", "auto", on_gpu=False, native_bf16=True) == "float32"
    assert generation_dtype("hf", "auto", on_gpu=True) == generation_dtype("vllm", "auto", on_gpu=True) == "bfloat16"
    assert generation_dtype("vllm", "float32", on_gpu=False, native_bf16=True) == "float32"  # a choice is kept
    # vLLM's CPU LoRA path in bfloat16 depends on the batch: an adapter stays in float32 there, unless asked
    assert generation_dtype("vllm", "auto", on_gpu=False, adapter=True, native_bf16=True) == "float32"
    assert generation_dtype("vllm", "bfloat16", on_gpu=False, adapter=True, native_bf16=True) == "bfloat16"
    assert generation_dtype("vllm", "auto", on_gpu=True, adapter=True) == "bfloat16"


def test_cpu_engine_skips_vllms_broken_aot_compile_cache(tmp_path, monkeypatch):
    monkeypatch.setattr("harness.backends.base.cpu_has_native_bf16", lambda: True)
    kwargs, env = kwargs_of(settings(tmp_path))
    assert env["VLLM_USE_AOT_COMPILE"] == "0" and kwargs["dtype"] == "bfloat16"
    kwargs, env = kwargs_of(settings(tmp_path, dtype="float32"))
    assert kwargs["dtype"] == "float32"
    kwargs, env = kwargs_of(settings(tmp_path), on_gpu=True)
    assert "VLLM_USE_AOT_COMPILE" not in env
    kwargs, _ = vllm_backend.engine_kwargs("/m", backend_options(settings(tmp_path)), seed=0, max_lora_rank=8,
                                           on_gpu=False)
    assert kwargs["dtype"] == "float32"  # an adapter on a CPU
