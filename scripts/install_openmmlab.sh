#!/usr/bin/env bash
# Install OpenMMLab (mmcv 2.1.0 with CPU ops, mmengine 0.10.7, mmdet 3.3.0, mmsegmentation 1.2.2) into a venv
# that already holds the main stack, for `task.framework=mmdet|mmseg` and the @pytest.mark.openmmlab tests.
#
#   bash scripts/install_openmmlab.sh [VENV]          # VENV defaults to $VIRTUAL_ENV, then ./.venv
#
# Why a script and not an extra: PyPI has mmcv only as an sdist, and mmdet 3.3.0 / mmseg 1.2.2 accept only
# mmcv < 2.2, so mmcv 2.1.0 must be compiled (about 12 minutes on 2 cores) and its setup.py needs two patches:
#   1. it imports pkg_resources, which setuptools >= 81 no longer ships  -> build with setuptools < 81;
#   2. it hard-codes -std=c++14/17, but torch >= 2.9 headers need C++20  -> sed the flags to c++20.
# The build runs in a throw-away build venv that sees the target venv's packages (torch headers) through a .pth
# file, so the older setuptools never touches the target venv, and with --no-build-isolation so pip can never
# fetch another torch into an isolated build env. The wheel is cached per machine, keyed by the Python tag and
# the torch version (it links against torch's C++ ABI), so later runs only install:
#   ${SEMA_WHEEL_CACHE:-$HOME/.cache/sema-bench/wheels}/torch-<version>/mmcv-2.1.0-<python tag>-*.whl
# Installing pins torch/torchvision to the versions already present (pip constraints), and the script ends by
# importing torch, torchvision, timm, mmcv.ops, mmdet and mmseg to prove both stacks still work.
#
# Environment: SEMA_WHEEL_CACHE (cache folder), MAX_JOBS (parallel compile jobs, default 2),
#              SEMA_MMCV_BUILD_DIR (scratch folder for the build, default a fresh mktemp -d).
set -euo pipefail

MMCV_VERSION=2.1.0
MMENGINE_VERSION=0.10.7
MMDET_VERSION=3.3.0
MMSEG_VERSION=1.2.2

VENV=${1:-${VIRTUAL_ENV:-.venv}}
PY="$VENV/bin/python"
if [[ ! -x "$PY" ]]; then
  echo "error: no python at $PY; pass the venv that holds torch as the first argument" >&2
  exit 2
fi
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "error: torch is not importable in $VENV; install the main stack first (pip install -e '.[all]')" >&2
  exit 2
fi

# Already done (setup.sh calls this on every `make test`): the exact versions import, mmcv with its compiled ops.
if "$PY" - 2>/dev/null <<EOF
import mmcv, mmcv.ops, mmengine, mmdet, mmseg, ftfy, regex
assert (mmcv.__version__, mmengine.__version__, mmdet.__version__, mmseg.__version__) == \
    ("${MMCV_VERSION}", "${MMENGINE_VERSION}", "${MMDET_VERSION}", "${MMSEG_VERSION}")
EOF
then
  echo "OpenMMLab already installed in $VENV (mmcv ${MMCV_VERSION} with ops, mmdet ${MMDET_VERSION}, mmseg ${MMSEG_VERSION})"
  exit 0
fi

TORCH_VERSION=$("$PY" -c "import torch; print(torch.__version__)")
TORCHVISION_VERSION=$("$PY" -c "import torchvision; print(torchvision.__version__)" 2>/dev/null || true)
PY_TAG=$("$PY" -c "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")
SITE_PACKAGES=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
CACHE_DIR="${SEMA_WHEEL_CACHE:-$HOME/.cache/sema-bench/wheels}/torch-${TORCH_VERSION}"
mkdir -p "$CACHE_DIR"

find_wheel() { ls "$CACHE_DIR"/mmcv-${MMCV_VERSION}-${PY_TAG}-*.whl 2>/dev/null | head -n 1; }

WHEEL=$(find_wheel || true)
if [[ -n "$WHEEL" ]]; then
  echo "reusing cached wheel $WHEEL"
else
  BUILD_DIR=${SEMA_MMCV_BUILD_DIR:-$(mktemp -d -t mmcv-build-XXXXXX)}
  mkdir -p "$BUILD_DIR"
  echo "building mmcv $MMCV_VERSION against torch $TORCH_VERSION in $BUILD_DIR (about 12 min on 2 cores)"
  # Build venv: its own setuptools<81 comes first on sys.path; the target venv (torch) is appended by a .pth.
  "$PY" -m venv "$BUILD_DIR/venv"
  BPY="$BUILD_DIR/venv/bin/python"
  BUILD_SITE=$("$BPY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  "$BPY" -m pip install --quiet 'setuptools<81' wheel
  echo "$SITE_PACKAGES" > "$BUILD_SITE/zz_target_venv.pth"
  "$BPY" -c "import torch, pkg_resources; print('build venv sees torch', torch.__version__)"

  # The sdist's metadata step also runs setup.py, so it needs the same old setuptools and no isolation.
  (cd "$BUILD_DIR" && "$BPY" -m pip download --no-deps --no-binary :all: --no-build-isolation \
      -d "$BUILD_DIR" "mmcv==${MMCV_VERSION}")
  tar -xzf "$BUILD_DIR/mmcv-${MMCV_VERSION}.tar.gz" -C "$BUILD_DIR"
  SRC="$BUILD_DIR/mmcv-${MMCV_VERSION}"
  sed -i 's/-std=c++14/-std=c++20/g; s/-std=c++17/-std=c++20/g; s#/std:c++14#/std:c++20#g; s#/std:c++17#/std:c++20#g' \
    "$SRC/setup.py"

  # CPU ops only: FORCE_CUDA=0 and no visible GPU, so a GPU machine does not try to compile CUDA kernels.
  PATH="$BUILD_DIR/venv/bin:$PATH" MMCV_WITH_OPS=1 FORCE_CUDA=0 CUDA_VISIBLE_DEVICES="" \
    MAX_JOBS=${MAX_JOBS:-2} "$BPY" -m pip wheel --no-deps --no-build-isolation -w "$BUILD_DIR/wheels" "$SRC"
  # Move into the cache only when complete, so an interrupted build never leaves a broken cached wheel.
  BUILT=$(ls "$BUILD_DIR"/wheels/mmcv-${MMCV_VERSION}-*.whl | head -n 1)
  cp "$BUILT" "$CACHE_DIR/.partial.whl"
  mv "$CACHE_DIR/.partial.whl" "$CACHE_DIR/$(basename "$BUILT")"
  WHEEL=$(find_wheel)
  echo "cached $WHEEL"
  [[ -z "${SEMA_MMCV_BUILD_DIR:-}" ]] && rm -rf "$BUILD_DIR"
fi

# Pin what is installed so that no requirement can swap torch (a torch wheel in PIP_FIND_LINKS would otherwise tempt pip).
CONSTRAINTS=$(mktemp -t openmmlab-constraints-XXXXXX.txt)
echo "torch==${TORCH_VERSION}" > "$CONSTRAINTS"
[[ -n "$TORCHVISION_VERSION" ]] && echo "torchvision==${TORCHVISION_VERSION}" >> "$CONSTRAINTS"
"$PY" -m pip install -c "$CONSTRAINTS" "$WHEEL" "mmengine==${MMENGINE_VERSION}" "mmdet==${MMDET_VERSION}" \
  "mmsegmentation==${MMSEG_VERSION}" ftfy regex
rm -f "$CONSTRAINTS"

"$PY" - <<EOF
import torch, torchvision
assert torch.__version__ == "${TORCH_VERSION}", f"torch changed to {torch.__version__}"
import importlib.util
if importlib.util.find_spec("timm"):
    import timm  # noqa: F401  (the main stack must still import)
import mmcv, mmcv.ops, mmengine, mmdet, mmseg
print("ok: torch", torch.__version__, "torchvision", torchvision.__version__, "mmcv", mmcv.__version__,
      "mmengine", mmengine.__version__, "mmdet", mmdet.__version__, "mmseg", mmseg.__version__)
EOF
