#!/usr/bin/env bash
# Install finetune and everything it needs into .venv (idempotent; re-running is fast).
#
# Run as:  bash scripts/setup.sh            # from the project root or anywhere
#          bash scripts/setup.sh --dev      # also test tools and Debian's chromium (renders report.html in a test)
#
# 1. Debian packages: ffmpeg (audio/video decoding through torchcodec), espeak-ng (the demo corpus), libsndfile1.
# 2. torch FIRST, pinned (2.13.0: the CPU build on CPU-only machines with a local wheel, CUDA from PyPI elsewhere),
#    so no later requirement makes pip resolve a fresh torch and download gigabytes of CUDA wheels.
# 3. The package with its export extra (+ dev, and openai-whisper for its writers, with --dev), constrained to
#    that torch and to torchcodec 0.13.0 (newest CPU build).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ "${1:-}" = "--dev" ] && ! command -v chromium >/dev/null && missing+=(chromium)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
ldconfig -p 2>/dev/null | grep -q libsndfile.so.1 || missing+=(libsndfile1)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/pip install -q "torch==2.13.0"
if [ "${1:-}" = "--dev" ]; then
  .venv/bin/pip install -q -c .ci/constraints-cpu.txt -e ".[dev,export]"
  # openai-whisper only for its output writers (tests compare ours with them); its deps (numba, triton) are not needed.
  .venv/bin/pip install -q --no-deps "openai-whisper==20250625"
else
  .venv/bin/pip install -q -c .ci/constraints-cpu.txt -e ".[export]"
fi
.venv/bin/python -c "import torch, transformers, peft, datasets, torchcodec.decoders; \
print(f'setup: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, \
datasets {datasets.__version__}; CUDA available: {torch.cuda.is_available()}')"
