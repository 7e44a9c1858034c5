#!/usr/bin/env bash
# The one prepared GPU run of bench/train_throughput.py (issue 16): plain TRL vs the product's fast path.
#
# Launch, from a session whose task is lent a machine (device tool, one call, ~8 of the 15 device minutes):
#   run(command="bash bench/gpu_run.sh", carry=[".gpu_wheels"], timeout_s=570)
# .venv cannot travel (3 GB, CPU-only torch; the carry limit is 64 MiB): the GPU image's python3 has CUDA torch
# 2.11, accelerate and transformers 5.17 but no trl or datasets, so the exact versions are carried as wheels.
# Prepare them once, on the CPU machine, before the call (~15 MB):
#   .venv/bin/pip download --no-deps --only-binary=:all: --python-version 3.12 -d .gpu_wheels \
#       trl==1.16.0 transformers==5.23.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19   # the image's python3 is 3.12
#   echo /.gpu_wheels/ >> .git/info/exclude     # carry takes ignored paths only
#
# Order = priority (each step's results are saved to $OUT/train_throughput.json after every arm, so a step cut
# off by its `timeout` keeps what it measured): SFT on both architectures, then on-policy, DPO and logit KD on
# SmolLM2, then generation tokens/s of both. Then the merged table. Everything it writes comes back from $OUT (7 files).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_run_out}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
BUDGET_S=${BUDGET_S:-480}  # every step together; each step's own cap is cut to what is left
deadline=$((SECONDS + BUDGET_S))

nvidia-smi | tee "$OUT/nvidia-smi.txt"

if [ -x .venv/bin/python ] && .venv/bin/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    PY=.venv/bin/python
else
    PY=python3
    if [ -d .gpu_wheels ]; then
        "$PY" -m pip install -q --no-index --no-deps --target /tmp/gpu_site .gpu_wheels/*.whl
        export PYTHONPATH=/tmp/gpu_site${PYTHONPATH:+:$PYTHONPATH}
    fi
fi
if ! "$PY" -c "import torch, transformers, trl, datasets, accelerate
print('python', __import__('sys').version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      'transformers', transformers.__version__, 'trl', trl.__version__, 'datasets', datasets.__version__,
      'accelerate', accelerate.__version__)"; then
    echo "no trl/datasets for $PY: carry .gpu_wheels (see the top of this script)"
    exit 2
fi

step() {  # name cap_seconds train_throughput.py-args...
    local name=$1 cap=$2
    shift 2
    local left=$((deadline - SECONDS))
    if ((left < 60)); then
        echo "=== $name: skipped, ${left} s of the ${BUDGET_S} s budget left"
        return
    fi
    ((cap > left)) && cap=$left
    echo "=== $name: $* (timeout ${cap} s)"
    local t0=$SECONDS
    timeout -k 15 "$cap" "$PY" bench/train_throughput.py --out "$OUT/train_throughput.json" "$@" >"$OUT/$name.log" 2>&1
    echo "=== $name: exit $? after $((SECONDS - t0)) s"
    grep -E "fell back|probe|Traceback|Error|vs plain|logit KD vs" "$OUT/$name.log" | tail -n 20
}

step sft 200 --only sft --model both --warmup 3 --steps 10
step onpolicy 170 --only onpolicy --model smollm2 --warmup 2 --steps 9
step dpo 90 --only dpo --model smollm2 --warmup 3 --steps 10
step logit_kd 90 --only logit_kd --model smollm2 --warmup 3 --steps 10

# Generation tokens/s of the product's local teacher (LocalGenerator: device and dtype chosen automatically).
left=$((deadline - SECONDS))
if ((left >= 30)); then
    echo "=== generate (timeout $((left < 60 ? left : 60)) s)"
    timeout -k 5 $((left < 60 ? left : 60)) "$PY" bench/generate_throughput.py --out "$OUT/generate.json" \
        >"$OUT/generate.log" 2>&1; echo "=== generate: exit $?"
    grep -E "tok/s|Error" "$OUT/generate.log" | tail -n 5
fi

"$PY" bench/train_throughput.py --table-only --out "$OUT/train_throughput.json" | tee "$OUT/table.md"
echo "total ${SECONDS} s"
