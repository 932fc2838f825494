#!/usr/bin/env bash
# Regenerates requirements/lock/*.txt: the exact versions of the core dependencies (core.txt) and of
# the core plus each extra (<extra>.txt), for CPython 3.11 on x86-64 Linux, with the CPU build of
# torch (but vllm.txt: vLLM's CUDA build). Plain `name==version` lines: no index URLs and no hashes,
# so any index that serves these releases can install them. scripts/setup.sh installs through them
# as pip constraints.
#   bash scripts/lock.sh
# Needs uv (`pip install uv`). The CPU build of torch comes from PyTorch's CPU index; where that
# index cannot be reached, set TORCH_CPU_FIND_LINKS to a folder (or a page of links) of wheels that
# holds it.
set -euo pipefail
cd "$(dirname "$0")/.."

# The torch release the project is tested on; its CPU build is `${TORCH_VERSION}+cpu`.
TORCH_VERSION=2.13.0
# The extras scripts/setup.sh installs side by side: resolved together once, so that their locks
# agree wherever they overlap and any of them can be combined.
TOGETHER=(embedded train eval dev)

command -v uv >/dev/null || { echo "scripts/lock.sh needs uv: pip install uv" >&2; exit 2; }
if [[ -n "${TORCH_CPU_FIND_LINKS:-}" ]]; then
  torch_source=(--find-links "$TORCH_CPU_FIND_LINKS")
else
  torch_source=(--torch-backend cpu)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "torch==${TORCH_VERSION}+cpu" >"$work/torch.txt"

compile() {
  uv pip compile pyproject.toml --quiet --no-annotate \
    --custom-compile-command "bash scripts/lock.sh" \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 "$@"
}
cpu_torch=("${torch_source[@]}" -c "$work/torch.txt")

extra_flags=()
for extra in "${TOGETHER[@]}"; do extra_flags+=(--extra "$extra"); done
compile "${cpu_torch[@]}" "${extra_flags[@]}" -o "$work/together.txt"

mkdir -p requirements/lock
rm -f requirements/lock/*.txt
compile "${cpu_torch[@]}" -c "$work/together.txt" -o requirements/lock/core.txt
for extra in "${TOGETHER[@]}"; do
  compile "${cpu_torch[@]}" -c "$work/together.txt" --extra "$extra" -o "requirements/lock/$extra.txt"
done
# The `vllm` extra is vLLM's CUDA build, for GPU machines: it pins its own CUDA torch and
# transformers releases, so it is resolved on its own, against PyPI's (CUDA) torch.
compile --extra vllm -o requirements/lock/vllm.txt

# The locks name torch by its public version. `torch==X` is met by the CPU build X+cpu, which
# scripts/setup.sh installs on Linux machines without an NVIDIA GPU, and by the default build
# elsewhere (macOS wheels are CPU builds; a CUDA machine keeps CUDA).
sed -i.orig "s/^torch==${TORCH_VERSION}+cpu\$/torch==${TORCH_VERSION}/" requirements/lock/*.txt
rm requirements/lock/*.orig
echo "locked: $(ls requirements/lock | tr '\n' ' ')"
