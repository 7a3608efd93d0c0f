#!/usr/bin/env bash
# The GPU check: every task's smoke recipe on CUDA (x baseline, ema, sema), a 2-process DDP smoke run when two GPUs
# exist, the GPU-only sema test, the sema-overhead benchmark, the engine-vs-hand-loop benchmark on CUDA, and the
# first two steps of every paper recipe with its own model at its own size (tests/test_paper_recipes.py's twins with
# SEMA_TWIN_DEVICE=cuda SEMA_TWIN_FULL=1: tiny fixture data in the real formats, so no dataset is needed).
# Writes results/gpu/ (summary.md with provenance, and each check's output); prints one line per check.
#
#   scripts/gpu_check.sh --prepare      # HERE, once, with network access to the package index: downloads the
#                                       # wheels the GPU image lacks (hydra, omegaconf, ...) into .wheels/
#   scripts/gpu_check.sh                # ON THE GPU MACHINE, from the repository root (about 5-8 minutes)
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_MODELS="tiny_mlp resnet18" scripts/gpu_check.sh   # the same on the CPU
#                                       # (tries the script itself; writes /tmp/gpu_check_cpu/)
#
# On the GPU machine it runs with that machine's python3 (PyTorch preinstalled) and PYTHONPATH=., installing
# only what is missing from .wheels/ (carry .wheels with the working tree). Every check runs even when one fails;
# the exit status is the number of failed checks.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
WHEELS=.wheels
NEEDED="hydra-core omegaconf antlr4-python3-runtime hydra-submitit-launcher submitit pycocotools"  # wandb: off here

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p "$WHEELS"
  # The GPU image runs Python 3.12 on x86-64; pure-Python wheels work anywhere, pycocotools needs its cp312 build.
  "$PY" -m pip download -q --dest "$WHEELS" --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 $NEEDED
  ls "$WHEELS"
  exit 0
fi

DEVICE=${GPU_CHECK_DEVICE:-cuda}
OUT=results/gpu
[ "$DEVICE" = cpu ] && OUT=${GPU_CHECK_OUT:-/tmp/gpu_check_cpu}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

missing=$("$PY" - <<'EOF'
import importlib.util
mods = {"hydra": "hydra-core", "omegaconf": "omegaconf", "antlr4": "antlr4-python3-runtime",
        "hydra_plugins.hydra_submitit_launcher": "hydra-submitit-launcher", "submitit": "submitit",
        "pycocotools": "pycocotools"}
def found(m):
    try:
        return importlib.util.find_spec(m) is not None
    except ModuleNotFoundError:
        return False
print(" ".join(p for m, p in mods.items() if not found(m)))
EOF
)
if [ -n "$missing" ]; then
  if [ -d "$WHEELS" ]; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" $missing || echo "[gpu_check] could not install: $missing"
  else
    echo "[gpu_check] missing packages ($missing) and no $WHEELS/: run scripts/gpu_check.sh --prepare first"
  fi
fi

SUMMARY=$OUT/summary.md
{
  echo "# GPU check"
  echo
  echo "- command: scripts/gpu_check.sh (GPU_CHECK_DEVICE=$DEVICE)"
  echo "- commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- machine: $(uname -m), $(nproc) CPUs; $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || echo 'no nvidia-smi')"
  echo "- python: $("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1)"
  echo
  echo "| check | status | seconds | output |"
  echo "|---|---|---|---|"
} > "$SUMMARY"

failed=0
check() {  # check <name> <command...>: runs it, logs to $OUT/<name>.log, one line on the terminal and in summary.md
  local name=$1; shift
  local start=$SECONDS
  if "$@" > "$OUT/$name.log" 2>&1; then status=ok; else status=FAILED; failed=$((failed + 1)); fi
  local took=$((SECONDS - start))
  printf '%-28s %-7s %5ss  %s\n' "$name" "$status" "$took" "$OUT/$name.log"
  echo "| $name | $status | $took | $name.log |" >> "$SUMMARY"
}

gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
RUNS=$(mktemp -d)
FAST=(logger.wandb.mode=disabled "trainer.device=$DEVICE")

check smoke_suite "$PY" -m benchmarks.suite --profile smoke --out-dir "$RUNS/suite" -- "${FAST[@]}"
if [ "$gpus" -ge 2 ] && [ "$DEVICE" = cuda ]; then
  check ddp_2_gpus "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 -m benchmarks.cli \
    recipe=smoke/classification method=sema "out_dir=$RUNS/ddp" "${FAST[@]}"
else
  echo "| ddp_2_gpus | skipped ($gpus GPU) | 0 | |" >> "$SUMMARY"
  printf '%-28s %-7s\n' ddp_2_gpus "skipped ($gpus GPU)"
fi
check gpu_tests "$PY" -m pytest -q -p no:cacheprovider tests/sema/test_binding.py tests/benchmarks/test_placement.py
MODELS=()
[ -n "${GPU_CHECK_MODELS:-}" ] && MODELS=(--models $GPU_CHECK_MODELS)  # e.g. "tiny_mlp resnet18" for a CPU try
check sema_overhead "$PY" -m benchmarks.overhead --device "$DEVICE" --reps 20 "${MODELS[@]}" --out "$OUT/overhead"
check engine_overhead "$PY" -m benchmarks.engine_overhead --method sema --steps 40 --reps 5 "trainer.device=$DEVICE"
# The issue's target shape: a CIFAR-sized ResNet-18 at batch 100 (Fashion-MNIST stands in for CIFAR: 32x32x3),
# speed settings on (not deterministic: cudnn.benchmark, TF32, channels_last, batches made on the device).
check engine_resnet18 "$PY" -m benchmarks.engine_overhead --method sema --steps 40 --reps 5 "trainer.device=$DEVICE" \
  task.model=resnet18 task.batch_size=100 trainer.deterministic=false
check paper_recipes env SEMA_TWIN_DEVICE="$DEVICE" SEMA_TWIN_FULL="${GPU_CHECK_FULL_RECIPES:-1}" \
  "$PY" -m pytest -q -p no:cacheprovider tests/test_paper_recipes.py -k twin_runs --durations=0
# The suite's comparison table and every run's device record, kept with the summary.
cp "$RUNS/suite/smoke/report/report.md" "$OUT/smoke_report.md" 2>/dev/null
"$PY" - "$RUNS/suite" >> "$SUMMARY" <<'EOF'
import json, pathlib, sys
rows = sorted(pathlib.Path(sys.argv[1]).rglob("result.json"))
print("\n| run | status | device | precision | headline |\n|---|---|---|---|---|")
for path in rows:
    r = json.loads(path.read_text())
    run = "/".join(path.parts[-4:-1])
    rt = r.get("runtime") or {}
    head = (r.get("final") or {}).get(r.get("headline"))
    print(f"| {run} | {r['status']} | {rt.get('device')} {rt.get('gpu') or ''} | {rt.get('precision')} | {head} |")
EOF
echo "[gpu_check] $failed check(s) failed; summary: $SUMMARY"
exit "$failed"
