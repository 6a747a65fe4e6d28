#!/usr/bin/env bash
# GPU check (DESIGN.md section 9): on a GPU machine with torch + CUDA toolkit, triton, pybind11 (and
# cupy, optional) already installed and no network: build sdkd with its CUDA part, run the GPU parity
# tests and the GPU benchmarks of the hot ops, and write everything under $OUT (default bench/results/).
# Generic: tests are selected by the `gpu` marker plus file names matching the hot ops, benches by
# file name (bench_<op>.py for every op in OPS that exists). Target: under 8 minutes.
#
#   OUT=/tmp/out bash bench/gpu_check.sh        # OPS="spectral_loss attention capped_simplex" by default
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-bench/results}
OPS=${OPS:-"spectral_loss attention capped_simplex"}
TEST_TIMEOUT=${TEST_TIMEOUT:-240}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-180}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

GPU_NAME=$(python -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no-gpu')" 2>/dev/null || echo unknown)
SAFE_NAME=$(echo "$GPU_NAME" | tr -c 'A-Za-z0-9._-' '_' | sed 's/_*$//')
log "GPU: $GPU_NAME"
python - <<'PY' 2>&1 | tee -a "$LOG"
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda)
for mod in ("triton", "pybind11", "cupy"):
    try:
        print(mod, __import__(mod).__version__)
    except Exception as exc:
        print(mod, "not available:", exc)
PY
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee -a "$LOG"

log "build: pip install --no-build-isolation ."
start=$(date +%s)
if ! python -m pip install -q --no-build-isolation --no-deps . >>"$LOG" 2>&1; then
  log "BUILD FAILED (see log)"
  exit 1
fi
log "build took $(( $(date +%s) - start )) s"
# run from outside the checkout so the installed package (with its _C) is the one imported
python -c "import sys; sys.path.pop(0); from sdkd.ops import _ext; print('extension:', _ext.summary())" 2>&1 | tee -a "$LOG"

tests=()
benches=()
for op in $OPS; do
  for f in tests/test_"${op}"*.py; do [ -e "$f" ] && tests+=("$f"); done
  [ -e "bench/bench_${op}.py" ] && benches+=("bench/bench_${op}.py")
done
log "GPU tests: ${tests[*]}"
rc=0
TRITON_INTERPRET= timeout "$TEST_TIMEOUT" python -m pytest -q -m gpu -p no:cacheprovider "${tests[@]}" \
  --junitxml="$OUT/gpu_tests.xml" >>"$LOG" 2>&1 || rc=$?
log "GPU tests exit code: $rc"
tail -n 15 "$LOG" | grep -E "passed|failed|error" || true

log "GPU benches: ${benches[*]}"
brc=0
if [ ${#benches[@]} -gt 0 ]; then
  TRITON_INTERPRET= timeout "$BENCH_TIMEOUT" python -m pytest -q -s -p no:cacheprovider "${benches[@]}" \
    --benchmark-only --benchmark-json="$OUT/${SAFE_NAME}.json" >>"$LOG" 2>&1 || brc=$?
fi
log "GPU benches exit code: $brc"
log "results: $OUT/${SAFE_NAME}.json, $OUT/gpu_tests.xml, $LOG"
exit $(( rc != 0 ? rc : brc ))
