"""A pytest plugin for the child runs of tests/test_e2e_vllm.py (``-p tests.vllm_received``): it records what
the real ``vllm.LLM`` received and answered, one JSON line per event, in the file named by $VLLM_RECEIVED.

It wraps the real class's methods (nothing stands in for vLLM): the constructor's keyword arguments and the
configuration the engine resolved from them (``llm_engine.vllm_config``), and for each ``generate`` call its
sampling parameters, the order in which the engine finished its requests and the outputs it returned, each
with vLLM's own record of the prompt tokens it answered. vLLM is imported when the harness first asks for it, as without the plugin,
so its import-time environment (harness.backends.vllm_quiet) is the harness's own."""

from __future__ import annotations

import functools
import json
import os

_wrapped = False


def _record(event: dict) -> None:
    with open(os.environ["VLLM_RECEIVED"], "a", encoding="utf-8") as f:
        f.write(json.dumps(event, default=str) + "\n")


def _resolved(llm) -> dict:
    """What the engine made of its arguments: vLLM's own configuration objects after start-up."""
    config = llm.llm_engine.vllm_config
    parallel, model, scheduler = config.parallel_config, config.model_config, config.scheduler_config
    return {
        "tensor_parallel_size": parallel.tensor_parallel_size,
        "pipeline_parallel_size": parallel.pipeline_parallel_size,
        "data_parallel_size": parallel.data_parallel_size,
        "distributed_executor_backend": parallel.distributed_executor_backend,
        "max_model_len": model.max_model_len,
        "dtype": str(model.dtype),
        "seed": model.seed,
        "max_num_seqs": scheduler.max_num_seqs,
    }


def _wrap(vllm) -> None:
    global _wrapped
    if _wrapped:
        return
    _wrapped = True
    cls = vllm.LLM
    init, generate, run_engine = cls.__init__, cls.generate, cls._run_engine

    @functools.wraps(init)
    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        _record({"event": "start", "kwargs": kwargs, "resolved": _resolved(self)})

    @functools.wraps(generate)
    def recording_generate(self, prompts, sampling_params=None, *args, **kwargs):
        p = sampling_params
        _record({"event": "sampling", "temperature": p.temperature, "top_p": p.top_p, "seed": p.seed,
                 "max_tokens": p.max_tokens, "n_prompts": len(prompts)})
        return generate(self, prompts, sampling_params, *args, **kwargs)

    @functools.wraps(run_engine)
    def recording_run_engine(self, *args, **kwargs):
        engine = self.llm_engine
        step, finished = engine.step, []

        def recording_step():
            outputs = step()
            finished.extend(o.request_id for o in outputs if o.finished)
            return outputs

        engine.step = recording_step
        try:
            outputs = run_engine(self, *args, **kwargs)
        finally:
            del engine.step  # the instance attribute goes; the class's method is back
        _record({"event": "generate", "finished": finished, "outputs": [
            {"request_id": o.request_id, "prompt_token_ids": list(o.prompt_token_ids),
             "text": o.outputs[0].text, "token_ids": list(o.outputs[0].token_ids),
             "finish_reason": o.outputs[0].finish_reason} for o in outputs]})
        return outputs

    cls.__init__, cls.generate, cls._run_engine = recording_init, recording_generate, recording_run_engine


def pytest_configure(config):
    from harness.backends import vllm_backend

    require = vllm_backend.require

    def recording_require(name, hint):
        module = require(name, hint)
        if name == "vllm":
            _wrap(module)
        return module

    vllm_backend.require = recording_require
