#!/usr/bin/env bash
# Train a PFN from its JSON config on a GPU within a time limit; rerun the same command to
# resume from the last checkpoint (one every `steps_per_chunk` steps), so a long training
# can be spread over several short GPU loans.
#
#   bash benchmarks/pfn_train_gpu.sh CONFIG OUT [SECONDS]        # refuses to run without a GPU
#   ALLOW_CPU=1 bash benchmarks/pfn_train_gpu.sh CONFIG OUT 60   # the same on CPU (to test it)
#
# e.g. the 1-5 input, 100-point mixed-kernel GP model (issue 19 (a); 60,000 steps, about
# 8 hours on 2 CPU cores at 2.1 steps/s):
#
#   bash benchmarks/pfn_train_gpu.sh probinfer/amortize/pretrained/gp_hyper_mixed.json \
#       runs/gp_hyper_mixed 480
#
# Exit status 0: the training finished; 3: the time limit came first (rerun to resume);
# other: an error. CONFIG and OUT are relative to the repository root. Appends one line per call to OUT/gpu_train.log: the device, the commit, the steps done
# before and after, and the training steps per second of this call (first chunk's compile
# included). Needs `make .venv/.installed-test` and a CUDA build of jaxlib in .venv
# (.venv/bin/pip install -U "jax[cuda12]").
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
if [ $# -lt 2 ]; then
    echo "usage: bash benchmarks/pfn_train_gpu.sh CONFIG OUT [SECONDS]" >&2
    exit 2
fi
config=$1 out=$2 limit=${3:-540}

backend=$("$PYTHON" -c "import jax; print(jax.default_backend())")
if [ "$backend" != gpu ] && [ "${ALLOW_CPU:-0}" != 1 ]; then
    echo "JAX sees no GPU (backend: $backend). Install a CUDA build of jaxlib into .venv" >&2
    echo "(.venv/bin/pip install -U 'jax[cuda12]'), or set ALLOW_CPU=1 to test this script." >&2
    exit 2
fi
device=$("$PYTHON" -c "import jax; d = jax.devices()[0]; print(f'{d.platform}: {d.device_kind}')")

steps_done() {  # the last checkpoint's step (0 before the first checkpoint)
    "$PYTHON" - "$out" <<'EOF'
import json, pathlib, sys
config = pathlib.Path(sys.argv[1]) / "config.json"  # written last in each checkpoint
print(0 if not config.exists() else json.loads(config.read_text())["step"])
EOF
}

before=$(steps_done)
start=$SECONDS
# SIGTERM at the limit: the run stops between checkpoints, and the next call resumes.
timeout "$limit" "$PYTHON" -m probinfer.cli pfn train --config "$config" --out "$out" --quiet
status=$?
seconds=$((SECONDS - start))
after=$(steps_done)
rate=$("$PYTHON" -c "print(f'{($after - $before) / max($seconds, 1):.2f}')")
mkdir -p "$out"
line="$(date -u '+%Y-%m-%d %H:%M UTC') $device commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown): steps $before -> $after in $seconds s ($rate steps/s, checkpointed steps only)"
echo "$line" | tee -a "$out/gpu_train.log"
# 124: the time limit ended this call; rerun to continue (exit 3). 0: the training finished.
if [ "$status" -eq 124 ]; then
    echo "time limit reached; rerun the same command to resume"
    exit 3
fi
exit "$status"
