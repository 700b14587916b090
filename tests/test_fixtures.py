"""The model-building fixtures: the content-addressed adapter cache builds once and reuses, two pytest-xdist
workers asking for the same adapter make one build, and training is opt-in (--run-training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.fixtures.build import BUILD_LOG, build_adapter, cached_adapter, tiny_llama
from harness.trainers.config import TrainConfig
from tests.paused_run import killed_at

GENERAL = [{"instruction": f"Say {w}.", "input": "", "output": w, "status": "ok"}
           for w in ("one", "two", "three", "four", "five", "six", "seven", "eight")]
SAFETY = [{"instruction": f"Tell me how to hurt {w}.", "input": "", "output": "I can't help with that."}
          for w in ("him", "her", "them")]


@pytest.fixture
def data(tmp_path) -> dict:
    (tmp_path / "general.jsonl").write_text("\n".join(json.dumps(r) for r in GENERAL) + "\n")
    (tmp_path / "safety.json").write_text(json.dumps(SAFETY))
    return dict(general=6, safety=2, general_data=str(tmp_path / "general.jsonl"),
                safety_data=str(tmp_path / "safety.json"), epochs=1, lr=1e-2, batch_size=4, cutoff=48, rank=4,
                save_every=0)


def builds(cache: Path) -> list[dict]:
    log = cache / "adapters" / BUILD_LOG
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def test_tiny_llama_is_built_once_per_seed(tmp_path):
    first = tiny_llama(tmp_path / "cache")
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny_llama(tmp_path / "cache") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert tiny_llama(tmp_path / "cache", seed=1) != first


def test_an_adapter_is_built_once_and_keyed_by_what_it_depends_on(tmp_path, data):
    cache = tmp_path / "cache"
    config = TrainConfig(base=str(tiny_llama(cache)), **data)
    assert cached_adapter(config, cache_dir=cache) is None
    folder = build_adapter(config, cache_dir=cache)
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "build.json").is_file()
    assert build_adapter(config, cache_dir=cache) == folder == cached_adapter(config, cache_dir=cache)
    assert len(builds(cache)) == 1

    other = build_adapter(TrainConfig(base=config.base, **{**data, "seed": 1}), cache_dir=cache)
    assert other != folder and len(builds(cache)) == 2
    # Changing a data file's content changes the key: the old adapter is not reused for new data.
    Path(data["general_data"]).write_text("\n".join(json.dumps(r) for r in reversed(GENERAL)) + "\n")
    assert cached_adapter(config, cache_dir=cache) is None


def test_a_build_killed_mid_step_is_resumed_by_the_next_caller(tmp_path, data):
    """The docstring's promise, with a real SIGKILL: the killed build's lock is released by its death, its
    checkpoint in <key>.partial is picked up, and the adapter is the one an uninterrupted build makes."""
    import torch
    from safetensors.torch import load_file

    base = str(tiny_llama(tmp_path / "models"))
    config = TrainConfig(base=base, **{**data, "epochs": 2, "save_every": 2})  # 8 examples, 4 a step: 4 steps
    whole = build_adapter(config, cache_dir=tmp_path / "whole")

    cache = tmp_path / "killed"
    killed_at("step", 4, ["build", json.dumps(config.as_dict()), str(cache)], tmp_path / "build.log")
    (partial,) = (cache / "adapters").glob("*.partial")
    assert json.loads((partial / "checkpoint" / "state.json").read_text())["step"] == 2
    assert cached_adapter(config, cache_dir=cache) is None and not builds(cache)

    folder = build_adapter(config, cache_dir=cache)
    assert json.loads((folder / "build.json").read_text())["resumed_from"] == 2
    assert not partial.exists() and len(builds(cache)) == 1
    a, b = load_file(whole / "adapter_model.safetensors"), load_file(folder / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


SUITE = '''
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.training
CONFIG = {config!r}


@pytest.mark.parametrize("i", range(4))
def test_build(lora_model, tiny_llama, i):
    path = lora_model(base=str(tiny_llama), **CONFIG)
    assert (path / "adapter_model.safetensors").is_file()
    Path("seen-%d-%s.txt" % (i, os.environ.get("PYTEST_XDIST_WORKER", "main"))).write_text(str(path))
'''


@pytest.mark.slow
def test_two_xdist_workers_make_one_build(pytester, tmp_path, data, monkeypatch):
    cache = tmp_path / "shared-cache"
    monkeypatch.setenv("SAFETY_HARNESS_CACHE", str(cache))
    pytester.makepyfile(test_builds=SUITE.format(config=data))
    args = ["-p", "harness.fixtures.plugin", "-p", "no:cacheprovider", "-p", "no:randomly"]

    skipped = pytester.runpytest_subprocess(*args)  # training is opt-in
    skipped.assert_outcomes(skipped=4)
    assert not (cache / "adapters").exists()

    result = pytester.runpytest_subprocess("-n", "2", "--run-training", *args)
    result.assert_outcomes(passed=4)
    seen = {p.name.split("-")[2][:-4]: p.read_text() for p in pytester.path.glob("seen-*.txt")}
    assert len(set(seen.values())) == 1  # every test got the same adapter folder
    assert len(list(pytester.path.glob("seen-*.txt"))) == 4
    assert len(builds(cache)) == 1  # built by one worker; the other waited on the lock and reused it

    again = pytester.runpytest_subprocess("-n", "2", *args, "-m", "training", "--run-training")
    again.assert_outcomes(passed=4)
    assert len(builds(cache)) == 1  # a later run reuses the cache
