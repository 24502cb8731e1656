#!/usr/bin/env bash
# The accelerator check: run it the moment a GPU is available (under 5 minutes on one GPU).
#
#   1. smoke test: JAX sees a GPU, and the zoo validation (NUTS, tempered SMC and nested
#      sampling against reference posteriors and exact evidence, `probinfer bench`) passes
#      on it, float32 as users run;
#   2. throughput (`benchmarks/scale.py`): NUTS transitions/s, gradients/s and ESS/s against
#      the number of chains, 4 to 4,096, vectorized in lock step and interleaved (sequential
#      chains, one after another, are for CPUs); tempered SMC and nested sampling likelihood
#      evaluations/s against particles and live points; PFN training and prediction tokens/s
#      against the batch. Each section is written as soon as it is done, so a time limit
#      that cuts the run keeps the sections before it.
#
# Writes benchmarks/results/gpu/ (device.txt names the device; smoke.log, bench.{md,json,png,log},
# scale.{md,json,png}, scale.log: the per-count lines even if the time limit cuts the run). Usage, from a checkout with `make .venv/.installed-test` done and a
# CUDA build of jaxlib installed (pip install -U "jax[cuda12]"):
#
#   bash benchmarks/gpu_check.sh              # refuses to run without a GPU
#   bash benchmarks/gpu_check.sh --allow-cpu  # the same steps on CPU (to test the script)
#
# The sizes are GPU sizes (CHAINS, PARTICLES, LIVE_POINTS, PFN_BATCHES override them): on
# 2 CPU cores 4,096 lock-step chains alone outlast the time limit, so test it there with
#   CHAINS=4,64 PARTICLES=1024 PFN_BATCHES=16 bash benchmarks/gpu_check.sh --allow-cpu
set -uo pipefail  # each step runs even if the one before failed; the status says if any did
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-benchmarks/results/gpu}
CHAINS=${CHAINS:-4,64,1024,4096}
PARTICLES=${PARTICLES:-1024,16384}
LIVE_POINTS=${LIVE_POINTS:-500}
PFN_BATCHES=${PFN_BATCHES:-64,512}
mkdir -p "$OUT"

backend=$("$PYTHON" -c "import jax; print(jax.default_backend())")
device=$("$PYTHON" -c "import jax; d = jax.devices()[0]; print(f'{d.platform}: {d.device_kind} x {jax.device_count()}')")
echo "device: $device ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))" | tee "$OUT/device.txt"
if [ "$backend" != gpu ] && [ "${1:-}" != --allow-cpu ]; then
    echo "JAX sees no GPU (backend: $backend). Install a CUDA build of jaxlib into .venv" >&2
    echo "(.venv/bin/pip install -U 'jax[cuda12]'), or pass --allow-cpu to test this script." >&2
    exit 2
fi

start=$SECONDS
echo "== 1/2 smoke test: zoo validation on the device"
timeout 140 "$PYTHON" -m probinfer.cli bench \
    --models normal_normal eight_schools_noncentered gaussian_mixture_2d \
    --methods nuts smc ns --out "$OUT" 2>&1 | tee "$OUT/smoke.log"
smoke=$?
echo "   $((SECONDS - start)) s so far"

echo "== 2/2 throughput: NUTS against chains ($CHAINS), SMC, nested sampling, PFN"
PYTHONPATH=. timeout 150 "$PYTHON" benchmarks/scale.py --sections chains,smc,ns,pfn \
    --chains "$CHAINS" --models eight_schools_noncentered --modes lock_step,interleaved \
    --particles "$PARTICLES" --live-points "$LIVE_POINTS" --pfn-batches "$PFN_BATCHES" --repeats 1 \
    --out "$OUT" 2>&1 | tee "$OUT/scale.log"
scale=$?
echo "done in $((SECONDS - start)) s; results in $OUT (smoke test status $smoke, throughput $scale)"
[ "$smoke" -eq 0 ] && [ "$scale" -eq 0 ]
