#!/usr/bin/env bash
# Set up a fresh machine for sema-bench: system data packages, a virtual environment with the pinned torch build,
# the project with all extras, and (with --openmmlab) the locally built mmcv + mmdet + mmseg.
#
#   scripts/setup.sh               # what `make quick` runs
#   scripts/setup.sh --openmmlab   # what `make test` runs (CI): also builds/installs OpenMMLab (cached wheel)
#
# Idempotent: each step is skipped when its result is already there, so reruns take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${SEMA_VENV:-.venv}
PY=${PYTHON:-python3}
WITH_OPENMMLAB=0
for arg in "$@"; do
  case "$arg" in
    --openmmlab) WITH_OPENMMLAB=1 ;;
    *) echo "setup.sh: unknown argument '$arg' (allowed: --openmmlab)" >&2; exit 2 ;;
  esac
done

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. Real data that ships as Debian packages (see docs/data.md).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "[setup] installing Debian package dataset-fashion-mnist (Fashion-MNIST, 31 MB)"
  as_root apt-get update -qq || true
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
fi

# 2. The virtual environment. torch/torchvision are pinned to the builds these machines carry locally.
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q -U pip
fi
stamp="$VENV/.sema-bench-installed"
want=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing torch==2.14.1 torchvision==0.29.1 and sema-bench[all,test]"
  "$VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
  "$VENV/bin/pip" install -q -e ".[all,test]"
  echo "$want" > "$stamp"
fi

# 3. Text corpus for the lm recipes (Jane Austen, Debian r-cran-janeaustenr, unpacked without installing R).
if ! "$VENV/bin/python" -c "from benchmarks.data import austen; austen.find_rdx()" 2>/dev/null; then
  as_root apt-get update -qq || true   # apt-get download needs the package lists
  "$VENV/bin/python" -m benchmarks.data.austen || echo "[setup] warning: could not fetch the Austen corpus; the lm recipes will say how"
fi

# 4. OpenMMLab (mmcv needs a patched source build; the wheel is cached per machine).
if [ "$WITH_OPENMMLAB" = 1 ]; then
  scripts/install_openmmlab.sh "$VENV"
fi
echo "[setup] done: $VENV"
