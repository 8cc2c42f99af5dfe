#!/usr/bin/env bash
# GPU checks in one go (parity in fp32 and bf16, the training input's CPU throughput, then the speed benchmarks,
# then the training step's memory at the official batch 40), each step bounded, one log per step (the benchmarks
# end their log with their JSON report). STEPS=train_b40_fp32,train_b40_bf16 runs only the training-memory part.
# Usage: OUT=results/gpu bash scripts/device_checks.sh   (PYTHON=... to pick the interpreter; the project need not
# be installed: the programs run as `python -m grm_jax.cli.NAME` from the repository root)
# A step that fails or overruns is recorded in steps.tsv and the next one still runs; steps are skipped once
# DEADLINE_S (default 540) seconds have passed, so the whole script fits one bounded session.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-results/device}
PY=${PYTHON:-python3}
DEADLINE_S=${DEADLINE_S:-540}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}
start=$(date +%s)
printf 'step\trc\tseconds\n' > "$OUT/steps.tsv"

STEPS=${STEPS:-all}   # comma-separated step names to run, or all

step() {  # step NAME TIMEOUT_S CMD...
  local name=$1 limit=$2; shift 2
  [[ $STEPS == all || ,$STEPS, == *,$name,* ]] || return 0
  local now=$(( $(date +%s) - start ))
  if (( now + 20 > DEADLINE_S )); then printf '%s\tskipped\t0\n' "$name" >> "$OUT/steps.tsv"; return; fi
  (( limit > DEADLINE_S - now )) && limit=$(( DEADLINE_S - now ))
  echo "=== $name (limit ${limit}s, at ${now}s)"
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$OUT/steps.tsv"
  tail -n 12 "$OUT/$name.log"
}

{ nvidia-smi -L; "$PY" -c "import sys, jax, flax, optax, torch; print(sys.version.split()[0], 'jax', jax.__version__, \
'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, jax.devices())"; } \
  > "$OUT/env.txt" 2>&1; cat "$OUT/env.txt"

step parity 150 "$PY" -m grm_jax.cli.parity tests/fixtures/parity
# training input on the host's CPUs (no accelerator: CUDA hidden from TensorFlow): pairs/s at 1 core and at 16,
# python and graph paths and a 16-worker localhost tf.data service, one alternating round (30 batches: at 16
# cores 3 batches would take a fraction of a second)
step bench_input 180 env CUDA_VISIBLE_DEVICES= "$PY" -m grm_jax.cli.bench_input --cores 16 --runs 1 --batches 30 \
  --configs python,graph,service --gil-seconds 3 --json "$OUT/bench_input.json"
step bench_inference_fp32 100 "$PY" -m grm_jax.cli.bench_inference --device gpu --batch-sizes ${BATCH_SIZES:-1,8,32}
step bench_tracking 130 "$PY" -m grm_jax.cli.bench_tracking --device gpu --batch 16
step bench_train_fp32 160 "$PY" -m grm_jax.cli.bench_train --batch 8 --runs 5
step bench_inference_bf16 80 "$PY" -m grm_jax.cli.bench_inference --device gpu --dtype bfloat16 --batch-sizes ${BATCH_SIZES:-1,8,32}
step bench_train_bf16 110 "$PY" -m grm_jax.cli.bench_train --batch 8 --runs 5 --dtype bfloat16
# the official per-GPU batch of ViT-B/256: peak device memory (allocator's peak_bytes_in_use after 3 steps) and
# step time, ours against the PyTorch re-statement (its peak in a fresh process, cuda max_memory_allocated)
step train_b40_fp32 240 "$PY" -m grm_jax.cli.bench_train --batch 40 --runs 3 --baseline both \
  --json "$OUT/train_b40_fp32.json"
step train_b40_bf16 200 "$PY" -m grm_jax.cli.bench_train --batch 40 --runs 3 --baseline both --dtype bfloat16 \
  --json "$OUT/train_b40_bf16.json"
# tracking frames/s per device count (one fresh process per count): the host's GPUs (1, 2, 4, ... up to all), then
# the host's CPU as 1, 2 and 4 fake devices; STEPS=track_devices_gpu,track_devices_cpu runs only these
n_gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
gpu_counts=1; for n in 2 4 8; do (( n <= n_gpus )) && gpu_counts+=",$n"; done
(( n_gpus > 1 && ! (n_gpus == 2 || n_gpus == 4 || n_gpus == 8) )) && gpu_counts+=",$n_gpus"
step track_devices_gpu 150 "$PY" -m grm_jax.cli.bench_tracking --device gpu --devices "${GPU_COUNTS:-$gpu_counts}" \
  --batch 16 --no-baseline --json "$OUT/track_devices_gpu.json"
step track_devices_cpu 200 env CUDA_VISIBLE_DEVICES= JAX_PLATFORMS=cpu "$PY" -m grm_jax.cli.bench_tracking \
  --device cpu --devices 1,2,4 --batch 8 --runs 2 --no-baseline --json "$OUT/track_devices_cpu.json"
cat "$OUT/steps.tsv"
