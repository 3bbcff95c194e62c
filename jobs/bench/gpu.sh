#!/usr/bin/env bash
# GPU checks of issue #10 on one CUDA machine, time-boxed to about 8 minutes:
#   1. the gpu-marked tests (pytest -m gpu tests/gpu): DDP bf16 + generation, ZeRO-3 bf16;
#   2. the throughput benchmark at 1B (bare loop vs Ray Train, overhead) and 8B (Ray only),
#      LoRA + DeepSpeed ZeRO-3 + bf16, random-init Llama architectures (no download);
#   3. the memory planner's per-GPU prediction (ecglm plan ... --json) vs the measured peak.
# Prints a summary table last. Installs nothing when the current Python already imports
# torch, ray, deepspeed, transformers, peft and pytest (PYTHON=... picks the interpreter);
# otherwise it tries a fresh venv (.venv-gpu, pip install torch + -e .[dev]) and says so.
#
# Usage: bash jobs/bench/gpu.sh            (logs and JSON under $OUT or runs/gpu-bench)
# Stage limits (seconds) can be changed: T_TESTS, T_1B, T_8B, T_PLAN.
set -u -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
LOGS="${OUT:-$REPO/runs/gpu-bench}"
mkdir -p "$LOGS"
T_TESTS="${T_TESTS:-200}" T_1B="${T_1B:-150}" T_8B="${T_8B:-240}" T_PLAN="${T_PLAN:-60}"
export PYTHONPATH="$REPO/platform${PYTHONPATH:+:$PYTHONPATH}"
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$REPO/.cache/torch_extensions}"
T0=$(date +%s)
say() { echo "[gpu.sh +$(( $(date +%s) - T0 ))s] $*"; }

# ---- interpreter -----------------------------------------------------------------------
NEED="import torch, ray, deepspeed, transformers, peft, pytest, mlflow"
PY=""
for cand in ${PYTHON:-} "$REPO/.venv/bin/python" "$REPO/.venv-gpu/bin/python" python3 python; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "$NEED" >/dev/null 2>&1; then
    PY="$cand"; break
  fi
done
if [ -z "$PY" ]; then
  say "no interpreter imports torch/ray/deepspeed/transformers/peft/pytest/mlflow:" \
      "trying a fresh venv .venv-gpu (pip install torch, then -e .[dev]; 300 s at most)"
  if timeout 300 bash -c "python3 -m venv '$REPO/.venv-gpu' && \
       '$REPO/.venv-gpu/bin/pip' install -q -U pip && \
       '$REPO/.venv-gpu/bin/pip' install -q torch && \
       '$REPO/.venv-gpu/bin/pip' install -q -e '$REPO[dev]'" >"$LOGS/install.log" 2>&1 \
     && "$REPO/.venv-gpu/bin/python" -c "$NEED" >/dev/null 2>&1; then
    PY="$REPO/.venv-gpu/bin/python"
  else
    say "FAILED: could not install the stack (see $LOGS/install.log; the machine may have" \
        "no package index). Run where 'python -c \"$NEED\"' works, or set PYTHON=..."
    tail -5 "$LOGS/install.log" 2>/dev/null
    exit 2
  fi
fi
say "python: $PY"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  say "FAILED: torch.cuda.is_available() is False with $PY (CPU-only torch build or no GPU)"
  exit 2
fi
"$PY" -c "import torch, deepspeed, ray, transformers; print('gpu:', torch.cuda.get_device_name(0), \
'| torch', torch.__version__, 'cuda', torch.version.cuda, '| deepspeed', deepspeed.__version__, \
'| ray', ray.__version__, '| transformers', transformers.__version__)" 2>/dev/null | tail -1
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader 2>/dev/null || true

# ---- 1. gpu tests ------------------------------------------------------------------------
say "1/3 gpu tests (limit ${T_TESTS}s)"
timeout "$T_TESTS" "$PY" -m pytest -q -m gpu tests/gpu -rs -p no:cacheprovider \
  >"$LOGS/gpu_tests.log" 2>&1
TESTS_RC=$?
tail -15 "$LOGS/gpu_tests.log"
[ "$TESTS_RC" = 124 ] && say "gpu tests: TIMED OUT after ${T_TESTS}s"

# ---- 2. throughput benchmark at 1B and 8B ---------------------------------------------
bench() {  # bench <size> <limit> <extra args...>
  local size="$1" limit="$2"; shift 2
  say "2/3 throughput --size $size LoRA + ZeRO-3 + bf16 (limit ${limit}s)"
  timeout "$limit" "$PY" jobs/bench/train_throughput.py --size "$size" --strategy deepspeed \
    --zero 3 --precision bf16 --steps 8 --warmup 2 --work "$LOGS/work-$size" "$@" \
    >"$LOGS/bench_$size.log" 2>&1
  local rc=$?
  grep '^\[throughput\]' "$LOGS/bench_$size.log" | tail -4
  if [ "$rc" = 0 ]; then tail -1 "$LOGS/bench_$size.log" >"$LOGS/bench_$size.json"
  else say "bench $size: exit $rc$([ "$rc" = 124 ] && echo ' (timed out)')"
       grep -v '^\[throughput\]' "$LOGS/bench_$size.log" | tail -8; fi
}
bench 1b "$T_1B"
bench 8b "$T_8B" --no-bare   # the overhead figure comes from 1B; 8B loads take the time

# ---- 3. planner prediction vs measured peak ---------------------------------------------
say "3/3 memory planner vs measured peak (limit ${T_PLAN}s each)"
for size in 1b 8b; do
  cfgf="$LOGS/work-$size/config.yaml"
  if [ ! -f "$cfgf" ]; then say "plan $size: no bench config ($cfgf)"; continue; fi
  timeout "$T_PLAN" "$PY" -m ecglm.cli plan "$cfgf" --model "llama-$size" --nodes 1 \
    --gpus-per-node 1 --gpu-mem-gib 139 --json >"$LOGS/plan_$size.log" 2>&1
  rc=$?
  if [ "$rc" = 0 ] && tail -1 "$LOGS/plan_$size.log" | "$PY" -c "import json,sys; json.loads(sys.stdin.read())" 2>/dev/null; then
    tail -1 "$LOGS/plan_$size.log" >"$LOGS/plan_$size.json"
  else
    say "plan $size: the planner is not available or failed (exit $rc): $(tail -2 "$LOGS/plan_$size.log" | tr '\n' ' ')"
  fi
done

# ---- summary ------------------------------------------------------------------------------
"$PY" - "$LOGS" "$TESTS_RC" <<'EOF'
import json, sys
from pathlib import Path
logs, tests_rc = Path(sys.argv[1]), int(sys.argv[2])
def load(name):
    f = logs / name
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None
def fmt(x, spec):
    return "-" if x is None else format(x, spec)
print("\n== summary ==")
print(f"gpu tests: {'PASSED' if tests_rc == 0 else 'FAILED' if tests_rc != 124 else 'TIMED OUT'} (exit {tests_rc})")
print("| size | tokens/s/worker | MFU | Ray overhead | first step s | peak GPU GiB (measured) | planner per_gpu_gib | planner/measured | planner fits | recommended |")
print("|---|---|---|---|---|---|---|---|---|---|")
for size in ("1b", "8b"):
    b, p = load(f"bench_{size}.json") or {}, load(f"plan_{size}.json") or {}
    peak = b.get("peak_gpu_mib")
    peak_gib = None if peak is None else peak / 1024
    pred = p.get("per_gpu_gib")
    ratio = pred / peak_gib if pred and peak_gib else None
    rec = p.get("recommended")
    rec_s = "-" if not rec else f"{rec.get('label')} (micro-batch {rec.get('train.batch_size')}, {rec.get('per_gpu_gib')} GiB)"
    print(f"| {size} | {fmt(b.get('tokens_per_s_per_worker'), '.0f')} | {fmt(b.get('mfu'), '.3f')} | "
          f"{fmt(b.get('ray_train_overhead'), '+.3f')} | {fmt(b.get('time_to_first_step_s'), '.1f')} | "
          f"{fmt(peak_gib, '.2f')} | {fmt(pred, '.2f')} | {fmt(ratio, '.2f')} | {p.get('fits', '-')} | {rec_s or '-'} |")
print(f"logs and JSON: {logs}")
EOF
say "done"
