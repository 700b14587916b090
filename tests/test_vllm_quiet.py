"""What a vLLM run prints, without an engine: the stand-in for vLLM's progress bar forwards each finished
request, and the quiet environment reaches only the engine's own processes."""

import os

from harness.backends import vllm_quiet
from harness.backends.vllm_backend import _finished_requests


def test_the_progress_bar_advances_per_finished_request():
    seen = []
    make = _finished_requests(seen.append)
    prompts = ["a", "b", "c"]
    assert make(prompts, desc="Rendering prompts") is prompts  # vLLM's other use: wrapping an iterable
    bar = make(total=3, desc="Processed prompts", dynamic_ncols=True, postfix="")  # as vLLM's _run_engine calls it
    for _ in range(3):
        bar.update(1)
        assert bar.format_dict["elapsed"] > 0  # vLLM divides by it
    bar.postfix = "est. speed"
    bar.refresh()
    bar.close()
    assert seen == [1, 1, 1] and bar.n == 3


def test_the_engine_start_environment_is_scoped_and_yields_to_the_user(monkeypatch):
    monkeypatch.setattr(vllm_quiet, "_verbose", False)
    monkeypatch.delenv("TORCH_LOGS", raising=False)
    monkeypatch.setenv("PYTHONWARNINGS", "default")  # the user's own choice
    with vllm_quiet.engine_start_env():
        assert os.environ["TORCH_LOGS"] == "-torch" and os.environ["PYTHONWARNINGS"] == "default"
    assert "TORCH_LOGS" not in os.environ and os.environ["PYTHONWARNINGS"] == "default"
    monkeypatch.setattr(vllm_quiet, "_verbose", True)
    with vllm_quiet.engine_start_env():
        assert "TORCH_LOGS" not in os.environ
    assert vllm_quiet.engine_output_kwargs() == {}
    monkeypatch.setattr(vllm_quiet, "_verbose", False)
    assert vllm_quiet.engine_output_kwargs() == {"use_tqdm_on_load": False}


def test_rays_logger_is_quiet_unless_verbose(monkeypatch):
    import logging

    monkeypatch.setattr(vllm_quiet, "_verbose", False)
    assert vllm_quiet.ray_logging_level() == logging.ERROR  # "Token authentication is enabled ..." is a WARNING
    monkeypatch.setattr(vllm_quiet, "_verbose", True)
    assert vllm_quiet.ray_logging_level() == logging.INFO
