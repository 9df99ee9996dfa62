#!/usr/bin/env bash
# Installs the OpenMMLab stack into .venv: mmcv 2.1.0 (with its compiled CPU ops), mmengine, mmdet, mmsegmentation
# (the pins are the [mm] extra in pyproject.toml). Called by `tools/setup.sh --mm` and `tools/setup.sh --dev`.
#
# mmcv 2.1.0 (the newest mmdet 3.3 / mmseg 1.2 accept) is source-only and cannot be a plain pip dependency:
# its setup.py needs pkg_resources (setuptools <= 81) and torch at build time (--no-build-isolation), and it
# hard-codes -std=c++17 while torch >= 2.10 headers need C++20 (tools/cxx20/g++ rewrites the flag).
# The build takes 12-14 min on 2 idle cores, so the wheel is kept in a cache folder keyed by torch version and
# Python tag, and later installs take seconds:
#   ${VZ_MMCV_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/visionzoo/mmcv-wheels}/torch<version>-cp<XY>/
# Idempotent: when everything is installed and mmcv's ops load, it only says so.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
py=.venv/bin/python
[ -x "$py" ] || { echo "install_mm: .venv is missing; run bash tools/setup.sh first" >&2; exit 1; }
pip=("$py" -m pip --disable-pip-version-check -q)
MMCV_VERSION=2.1.0

installed() {
  "$py" - <<'EOF' 2>/dev/null
import importlib.metadata as md
import mmcv._ext  # noqa: F401  (the compiled ops load against this torch)
pins = {"mmcv": "2.1.0", "mmengine": "0.10.7", "mmdet": "3.3.0", "mmsegmentation": "1.2.2"}
assert all(md.version(name) == version for name, version in pins.items())
import ftfy, regex, psutil  # noqa: F401,E401  (mmseg.utils / mmdet.utils import them)
import pkg_resources  # noqa: F401  (mmengine imports it at run time; gone in setuptools >= 82)
EOF
}

if installed; then
  echo "install_mm: mm stack already installed (checked in $(( $(date +%s) - start )) s)"
  exit 0
fi

key=$("$py" -c 'import sys, torch; print("torch%s-cp%d%d" % (torch.__version__.split("+")[0], *sys.version_info[:2]))')
cache="${VZ_MMCV_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/visionzoo/mmcv-wheels}/$key"
wheel=$(ls "$cache"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  echo "install_mm: no mmcv $MMCV_VERSION wheel for $key in $cache; building it (12-14 min on 2 idle cores)"
  build_start=$(date +%s)
  "${pip[@]}" install setuptools==81.0.0 wheel ninja  # pkg_resources for mmcv's setup.py; ninja for a parallel build
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # --no-cache-dir: pip's own wheel cache ignores the torch version and would hand back a wheel built against another
  env -u FORCE_CUDA -u CUDA_HOME MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" CXX="$PWD/tools/cxx20/g++" \
    "${pip[@]}" wheel --no-build-isolation --no-deps --no-cache-dir -w "$tmp" "mmcv==$MMCV_VERSION"
  mv "$tmp"/mmcv-"$MMCV_VERSION"-*.whl "$cache"/  # moved in only when complete
  wheel=$(ls "$cache"/mmcv-"$MMCV_VERSION"-*.whl | head -n 1)
  echo "install_mm: built $(basename "$wheel") in $(( $(date +%s) - build_start )) s"
else
  echo "install_mm: using the cached $wheel"
fi

# the wheel first on the command line: pip takes mmcv from it and never tries to build mmcv itself
"${pip[@]}" install "$wheel" -e ".[mm]"
installed && "$py" -c "import mmdet.models, mmseg.models" || {
  echo "install_mm: the mm stack does not import after installation" >&2; exit 1; }
echo "install_mm: mm stack installed in $(( $(date +%s) - start )) s"
