#!/usr/bin/env bash
# GPU-day bench: on a machine with an NVIDIA GPU, installs kdjax with `.[cuda12]` and measures, in
# well under 10 minutes, writing everything to one results folder:
#   1. the KD train step (resnet32x4 -> resnet8x4, CIFAR-100 shapes) on 1 device, float32 and the
#      bfloat16 policy (kdjax.precision), batch 128 and 512 (bench/vs_torch.py, kdjax half);
#   2. a short CIFAR-100-shaped KD training on synthetic data: kdjax's real epoch loop
#      (InMemoryFeed, on-device crop + flip + normalise, 50 steps per epoch) next to its bare step;
#   3. the input-pipeline bench (bench/input_pipeline.py) when it is present.
#
#   bash bench/gpu.sh [RESULTS_DIR]          (default bench/results/gpu_<UTC time>)
#
# Offline machines: put the wheels in a folder and set KDJAX_WHEELS=/path (pip --no-index
# --find-links). KDJAX_PYTHON picks the interpreter (>= 3.12 for jax 0.12). Each stage has its
# own time limit, so one slow stage cannot eat the others' time.
set -uo pipefail
cd "$(dirname "$0")/.."
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${1:-bench/results/gpu_$STAMP}
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
exec > >(tee -a "$LOG") 2>&1
T0=$(date +%s)
echo "[gpu.sh] $STAMP results -> $OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"

# ---- install -----------------------------------------------------------------------------------
PY=${KDJAX_PYTHON:-python3.12}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv-gpu/bin/python ]; then
  "$PY" -m venv .venv-gpu
fi
VPY=.venv-gpu/bin/python
PIP_ARGS=(-q)
if [ -n "${KDJAX_WHEELS:-}" ]; then PIP_ARGS+=(--no-index --find-links "$KDJAX_WHEELS"); fi
timeout 300 $VPY -m pip install "${PIP_ARGS[@]}" -e '.[cuda12]' 2>&1 | grep -vE '^(WARNING: Location|  |$)'
$VPY - <<'EOF' 2>&1 | tee "$OUT/devices.txt"
import jax
print("jax", jax.__version__, "devices", jax.devices())
assert jax.devices()[0].platform == "gpu", "no GPU visible to JAX: check the CUDA wheels / driver"
EOF
[ "${PIPESTATUS[0]}" = 0 ] || { echo "[gpu.sh] JAX sees no GPU; stopping."; exit 1; }
echo "[gpu.sh] install done after $(( $(date +%s) - T0 )) s"

# ---- 1 + 2: KD step f32 / bf16, and the real epoch loop ---------------------------------------
# 1 device even on a multi-GPU host (the step bench is a single-device figure).
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
export XLA_PYTHON_CLIENT_PREALLOCATE=false
timeout 240 $VPY bench/vs_torch.py --torch_python none \
  --pairs r32x4_r8x4:128,r32x4_r8x4:512 --kdjax step,step_bf16 --rounds 5 --steps 20 \
  --warm_steps 5 --out "$OUT" || echo "[gpu.sh] KD-step bench failed or timed out"
timeout 150 $VPY bench/vs_torch.py --torch_python none --pairs r32x4_r8x4:128 \
  --kdjax loop,loop_bare --epoch_steps 50 --rounds 3 --steps 50 --warm_steps 0 --out "$OUT" \
  || echo "[gpu.sh] epoch-loop training bench failed or timed out"
echo "[gpu.sh] KD benches done after $(( $(date +%s) - T0 )) s"

# ---- 3: input pipeline -------------------------------------------------------------------------
if [ -f bench/input_pipeline.py ]; then
  timeout 120 $VPY bench/input_pipeline.py --n 256 --repeat 2 --workers 0,1,2,4,8 \
    --dir "$OUT/ip_fixture" 2>&1 | tee "$OUT/input_pipeline.txt" \
    || echo "[gpu.sh] input-pipeline bench failed or timed out"
  rm -rf "$OUT/ip_fixture"
else
  echo "[gpu.sh] bench/input_pipeline.py not present: skipped"
fi
echo "[gpu.sh] all done in $(( $(date +%s) - T0 )) s; results in $OUT"
