#!/usr/bin/env bash
# Install fedgin-flare (editable) into the current Python environment.
#   ./install.sh          runtime dependencies
#   ./install.sh --test   plus the test dependencies
# PyTorch: an installed torch (for example a CUDA build) is kept. Otherwise torch==$FEDGIN_TORCH_VERSION is
# installed first; on a machine without an NVIDIA GPU set FEDGIN_TORCH_INDEX_URL to PyTorch's CPU wheel index
# so that pip does not download the CUDA build (on machines whose pip is configured with a local CPU wheel,
# nothing needs to be set).
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
extras=""
for arg in "$@"; do
  case "$arg" in
    --test) extras="[test]" ;;
    *) echo "install.sh: unknown option $arg (use --test)" >&2; exit 2 ;;
  esac
done
if "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "install.sh: keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  version="${FEDGIN_TORCH_VERSION:-2.13.0}"
  if [ -n "${FEDGIN_TORCH_INDEX_URL:-}" ]; then
    "$PY" -m pip install "torch==$version" --index-url "$FEDGIN_TORCH_INDEX_URL"
  else
    "$PY" -m pip install "torch==$version"
  fi
fi
"$PY" -m pip install -e ".$extras"
# pyenv only sees new console scripts after a rehash
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
"$PY" -c "import fedgin, torch; print(f'install.sh: fedgin {fedgin.__version__} with torch {torch.__version__}')"
