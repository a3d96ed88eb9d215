#!/usr/bin/env bash
# The GPU path of issue 14, item 5, as one short script. PREPARED, NOT YET RUN: no GPU machine
# was available when it was written. Run from the repository root on a GPU machine:
#   WIKITEXT_DIR=/path/to/wikitext-2 bash scripts/gpu_check.sh   (figures go to $OUT or ./gpu-out)
# The machine may have no network: install the project from wheels carried along
# (pip install --no-index --find-links wheels/ -e .) and carry the WikiText-2 files
# (train.txt, valid.txt, test.txt, tokenized or raw); ../shared does not travel with the code
# (and ../shared/data/wikitext-2 lacks the train split, so it cannot stand in for them).
set -euo pipefail
export OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export ADRLAB_RUNS_DIR="$OUT/runs" ADRLAB_REPORTS_DIR="$OUT/reports" ADRLAB_DATA_DIR="${WIKITEXT_DIR%/wikitext-2}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
python - <<'PY' | tee "$OUT/peak.txt"
import time, torch
# Measured bf16 matmul peak: the MFU denominator (not the datasheet number).
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
for _ in range(3): a @ b
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(20): a @ b
torch.cuda.synchronize(); print(f"bf16 matmul peak TFLOP/s: {2 * 8192**3 * 20 / (time.perf_counter() - t) / 1e12:.1f}")
PY
# One epoch per optimizer at paper scale; the run logs epoch_time, step_time_ms,
# optimizer_step_share, peak_memory_mb and derived.{model,ns}_flops_per_step (adrlab.cost).
for opt in adamw muon rmsuon ada_rmsuon; do
  timeout 1800 adrlab run data=wikitext2 scale=paper trainer.epochs=1 optimizer=$opt \
    tracking.experiment=gpu-check trainer.progress=off || echo "optimizer $opt failed" | tee -a "$OUT/failures.txt"
done
python - <<'PY' | tee "$OUT/figures.md"
import os
from adrlab import tracking
runs = tracking.search_runs(tracking.tracking_uri(None), ["gpu-check"])
peak = float(open(os.environ["OUT"] + "/peak.txt").read().split(":")[1]) * 1e12
for _, r in runs.iterrows():
    tokens = 8 * 255 * float(r["params.derived.steps_per_epoch"])
    tok_s = tokens / r["metrics.epoch_time"]
    flops_tok = float(r["params.derived.model_flops_per_step"]) / (8 * 255)
    print(f"| {r['params.optimizer.name']} | {tok_s:.0f} tok/s | MFU {tok_s * flops_tok / peak:.1%} | "
          f"optimizer share {r['metrics.optimizer_step_share']:.1%} | peak {r['metrics.peak_memory_mb']:.0f} MB |")
PY
python - <<'PY' | tee "$OUT/ns_batched.txt"
import time, torch
from adrlab.optim.muon import newton_schulz
# Batched vs per-matrix NS on the paper model's shapes (4 layers × q,k,v,o and MLP matrices), bf16.
mats = [torch.randn(768, 512, device="cuda") for _ in range(16)] + [torch.randn(2048, 512, device="cuda") for _ in range(12)]
def per_matrix(): [newton_schulz(m, 5, dtype=torch.bfloat16) for m in mats]
def batched(): [newton_schulz(torch.stack([m for m in mats if m.shape == s]), 5, dtype=torch.bfloat16) for s in {m.shape for m in mats}]
for name, fn in (("per-matrix", per_matrix), ("batched", batched)) * 2:
    fn(); torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(20): fn()
    torch.cuda.synchronize(); print(f"{name}: {(time.perf_counter() - t) / 20 * 1e3:.2f} ms per step")
PY
