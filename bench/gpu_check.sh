#!/usr/bin/env bash
# GPU check (DESIGN.md section 9): on a GPU machine with torch + CUDA toolkit, triton, pybind11 (and
# cupy, pytest-xdist, pytest-timeout, optional) already installed and no network: build sdkd's
# extension in place for this GPU's architecture, run every `gpu`-marked test, then the GPU benchmarks
# of the hot ops and the end-to-end ones, and write everything under $OUT (default bench/results/).
# Every step has its own time limit and writes its own file, so a slow step costs only itself.
# Target: under 8 minutes. At most 8 files come back from a device run: this writes 8.
#
#   OUT=/tmp/out bash bench/gpu_check.sh
#   TESTS="tests/test_spectral_loss_backends.py" BENCHES="spectral_loss" bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET

OUT=${OUT:-bench/results}
TESTS=${TESTS:-tests}
BENCHES=${BENCHES:-"spectral_loss overhead capped_simplex attention e2e sdkd"}
TEST_TIMEOUT=${TEST_TIMEOUT:-240}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-60}  # per bench group; attention gets 100 s, spectral_loss 90 s
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }
has() { python -c "import $1" >/dev/null 2>&1; }

GPU_NAME=$(python -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no-gpu')" 2>/dev/null || echo unknown)
SAFE_NAME=$(echo "$GPU_NAME" | tr -c 'A-Za-z0-9._-' '_' | sed 's/_*$//')
log "GPU: $GPU_NAME"
python - <<'PY' 2>&1 | tee -a "$LOG"
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda)
for mod in ("triton", "pybind11", "cupy", "xdist", "pytest_timeout", "pytest_benchmark"):
    try:
        print(mod, getattr(__import__(mod), "__version__", "present"))
    except Exception as exc:
        print(mod, "not available:", exc)
PY
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee -a "$LOG"

# build in place (the tests import the checkout), for this GPU only: faster than the default arch list
ARCH=$(python -c "import torch; a, b = torch.cuda.get_device_capability(); print(f'{a}{b}')" 2>/dev/null || echo 90)
export SDKD_CUDA_ARCHS=${SDKD_CUDA_ARCHS:-$ARCH}  # a failed build fails the install (no pure-Python fall-back)
log "build: pip install --no-build-isolation -e . (SDKD_CUDA_ARCHS=$SDKD_CUDA_ARCHS)"
start=$(date +%s)
built() { python -c "from sdkd.ops import _ext; import sys; sys.exit(0 if _ext.summary().get('cuda_usable') else 1)"; }
python -m pip install -q --no-build-isolation --no-deps -e . >>"$LOG" 2>&1
# pip can leave an editable install without the compiled module (seen on a reused machine): check, then build in place
if ! built; then
  log "no usable sdkd._C after pip install -e; building in place (setup.py build_ext --inplace --force)"
  python setup.py -q build_ext --inplace --force >>"$LOG" 2>&1 || { log "BUILD FAILED (see log)"; exit 1; }
  built || { log "sdkd._C still has no usable CUDA part (see log)"; exit 1; }
fi
log "build took $(( $(date +%s) - start )) s"
python -c "from sdkd.ops import _ext; print('extension:', _ext.summary())" 2>&1 | tee -a "$LOG"

log "GPU tests (-m gpu): $TESTS"
opts=(-q -m gpu -p no:cacheprovider -rfE --junitxml="$OUT/gpu_tests.xml")
has xdist && opts+=(-n 8)
has pytest_timeout && opts+=(--timeout 120)
start=$(date +%s)
rc=0
# shellcheck disable=SC2086
timeout "$TEST_TIMEOUT" python -m pytest "${opts[@]}" $TESTS >>"$LOG" 2>&1 || rc=$?
log "GPU tests exit code: $rc ($(( $(date +%s) - start )) s)"
tail -n 40 "$LOG" | grep -E "passed|failed|error|FAILED|ERROR" | tail -n 25 || true

export SDKD_BENCH_DEVICE=cuda  # the capped-simplex reference runs on the GPU too
# measured `auto`: picks are timed in this run (a fresh picks file), listed and compared with the reference below
export SDKD_CACHE_DIR=${SDKD_CACHE_DIR:-$(mktemp -d /tmp/sdkd-gpu-check-cache.XXXXXX)}
unset SDKD_AUTOTUNE SDKD_BACKEND
brc=0
for b in $BENCHES; do
  limit=$BENCH_TIMEOUT
  case $b in
    e2e) files=(bench/bench_kd_step.py bench/bench_forecast.py) ;;
    overhead) files=(bench/bench_overhead.py); limit=40 ;;
    attention) files=(bench/bench_attention.py); limit=$(( BENCH_TIMEOUT + 40 )) ;;
    spectral_loss) files=(bench/bench_spectral_loss.py); limit=$(( BENCH_TIMEOUT + 30 )) ;;  # + forced and paired cases
    *) files=("bench/bench_${b}.py") ;;
  esac
  start=$(date +%s)
  r=0
  if [ "$b" = sdkd ]; then  # the installed-package check a GPU user runs: auto's pick vs the reference per op
    log "bench sdkd: sdkd bench --device cuda"
    timeout "$(( BENCH_TIMEOUT + 30 ))" python -m sdkd.cli bench --device cuda --out "$OUT/sdkd_bench_${SAFE_NAME}.json" \
      >>"$LOG" 2>&1 || r=$?
    log "bench sdkd exit code: $r ($(( $(date +%s) - start )) s)"
    [ "$r" -ne 0 ] && brc=$r
    continue
  fi
  log "bench $b: ${files[*]}"
  timeout "$limit" python -m pytest -q -s -p no:cacheprovider "${files[@]}" --benchmark-only \
    --benchmark-columns=min,median,max,rounds --benchmark-json="$OUT/bench_${b}_${SAFE_NAME}.json" >>"$LOG" 2>&1 || r=$?
  log "bench $b exit code: $r ($(( $(date +%s) - start )) s)"
  [ "$r" -ne 0 ] && brc=$r
done
log "measured auto: tuned picks (sdkd info) and auto / reference per case"
python -m sdkd.cli info 2>&1 | sed -n '/^tuned picks/,$p' | tee -a "$LOG"
SAFE_NAME="$SAFE_NAME" OUT="$OUT" python - <<'PY' 2>&1 | tee -a "$LOG"
import json, os, pathlib
out, name = pathlib.Path(os.environ["OUT"]), os.environ["SAFE_NAME"]
for bench in ("spectral_loss", "overhead"):
    path = out / f"bench_{bench}_{name}.json"
    if not path.exists():
        print(f"{bench}: no results ({path.name} missing)")
        continue
    groups = {}
    for b in json.loads(path.read_text())["benchmarks"]:
        label = b["extra_info"].get("backend") or b["param"]
        groups.setdefault(b["group"], {})[label] = (b["stats"]["median"], b["extra_info"].get("pick", ""))
    for group, cases in sorted(groups.items()):
        ref = cases.get("reference") or cases.get("baseline")
        for label, (median, pick) in sorted(cases.items()):
            if label in ("auto", "sdkd") and ref:
                print(f"{group:45s} {label} -> {pick:24s} {median * 1e6:10.1f} us  {ref[0] / median:6.2f}x the "
                      f"{'reference' if 'reference' in cases else 'baseline'}")
PY
log "results under $OUT: gpu_check.log, gpu_tests.xml, bench_*_${SAFE_NAME}.json, sdkd_bench_${SAFE_NAME}.json"
exit $(( rc != 0 ? rc : brc ))
