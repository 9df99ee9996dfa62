#!/usr/bin/env bash
# Creates .venv in the repository root (if missing) and installs visionzoo into it, editable.
#   bash tools/setup.sh          # library + training stack (what `visionzoo demo` and train.py need)
#   bash tools/setup.sh --dev    # ... plus the test tools (pytest, hypothesis, triton) and the mm stack
#   bash tools/setup.sh --mm     # library + training stack + mmdet/mmseg (tools/install_mm.sh; mmcv wheel cached)
# torch: an existing install in .venv is kept; otherwise torch==2.14.1 / torchvision==0.29.1 are
# installed (override with VZ_TORCH_SPEC="torch==X torchvision==Y").
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  # shellcheck disable=SC2086
  "${pip[@]}" install ${VZ_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
fi
extras=train
mm=0
for arg in "$@"; do
  case "$arg" in
    --dev) extras=train,dev; mm=1 ;;
    --mm) mm=1 ;;
    *) echo "setup: unknown option $arg (use --dev and/or --mm)" >&2; exit 2 ;;
  esac
done
"${pip[@]}" install -e ".[${extras}]"
if [ "$mm" = 1 ]; then bash tools/install_mm.sh; fi
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')) in $(( $(date +%s) - start )) s"
