#!/usr/bin/env bash
# Install the CPU build of PyTorch before anything else, so that no dependency pulls the multi-GB
# CUDA wheels onto a CPU box. Skips when a torch is already installed (e.g. your CUDA build).
set -euo pipefail
PY=${PYTHON:-python}
if "$PY" -c "import torch" 2>/dev/null; then
  echo "torch $("$PY" -c 'import torch; print(torch.__version__)') already installed"
  exit 0
fi
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
# The official CPU index first (no CUDA packages); fall back to the plain pinned version (offline
# boxes that carry the CPU wheel locally, or platforms whose default wheel is CPU-only).
"$PY" -m pip install --timeout 10 --retries 1 "torch==${TORCH_VERSION}" \
    --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
  || "$PY" -m pip install "torch==${TORCH_VERSION}"
