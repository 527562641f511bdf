#!/usr/bin/env bash
# One command for a machine with a GPU, when one is lent for a few minutes: the suite on
# CUDA tensors, the IWAE evaluator's timing on the device, fit's seconds per epoch there,
# and the compiled step against the eager one and a hand-written loop, written to a small
# report. Under 8 minutes on one GPU.
#
#   bash bench/device_check.sh [REPORT_DIR]        # default: device-report/
#
# On a machine without a GPU it runs on the emulated device of ../shared/fakecuda when
# PYTHONPATH and FAKECUDA=1 say so (see its README): the figures then time the CPU.
set -u
cd "$(dirname "$0")/.."
out=${1:-device-report}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
report="$out/report.md"
device=$("$python" - <<'PY'
import torch
if not torch.cuda.is_available():
    print("none")
else:
    try:
        print(torch.cuda.get_device_name(0))
    except Exception as error:  # an emulated device
        print(f"cuda ({type(error).__name__}: emulated?)")
PY
)
{
    echo "# probae device check"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- device: $device"
    echo "- torch: $("$python" -c 'import torch; print(torch.__version__)')"
} >"$report"
if [ "$device" = "none" ]; then
    echo "- no CUDA device: nothing to check" >>"$report"
    cat "$report"
    exit 1
fi

section() { printf '\n## %s\n\n```\n' "$1" >>"$report"; }
close() { printf '```\n' >>"$report"; }

section "test suite, PROBAE_DEVICE=cuda (at most 240 s)"
PROBAE_DEVICE=cuda timeout 240 "$python" -m pytest -q -x -p no:randomly 2>&1 | tail -n 3 >>"$report"
close

section "IWAE k=1000 evaluator on the device (at most 90 s)"
timeout 90 "$python" bench/evaluator.py --device cuda --images 200 --repeats 2 2>&1 |
    tail -n 16 >>"$report"
close

section "fit on the device: IWAE net, 5000 MNIST images, batch 100 (at most 40 s)"
timeout 40 "$python" - >>"$report" 2>&1 <<'PY'
import sys, time
from pathlib import Path
sys.path.insert(0, "bench")
import torch
from peers import iwae_nets
import probae
from probae import VAE, data
root = Path("..") / "shared" / "data"
x = data.load("mnist", split="train", root=root).x[:5000].to("cuda")
encoder, decoder = iwae_nets(0)
vae = VAE((784,), 50, encoder=encoder, decoder=decoder).to("cuda")
for epochs in (1, 3):
    began = time.perf_counter()
    probae.fit(vae, x, epochs=epochs, batch_size=100, binarize="dynamic", progress=False)
    torch.cuda.synchronize()
    print(f"{epochs} epoch(s): {(time.perf_counter() - began) / epochs:.3f} s/epoch")
PY
close

section "compiled step on the device: IWAE net, 10000 MNIST images (at most 100 s)"
timeout 100 "$python" bench/compiled_step.py --device cuda --train-size 10000 --epochs 4 2>&1 |
    grep -v '^W[0-9]' | tail -n 8 >>"$report"
close
cat "$report"
