#!/usr/bin/env bash
# GPU check, one prepared script (about 6-8 minutes on one H100/H200): LoRA training steps of whisper-base and
# whisper-small in bf16 with sdpa attention, then the FSDP and DeepSpeed ZeRO-3 configs on that one GPU as a smoke
# test (a short benchmark each, and a whole `finetune train` run under FSDP: adapter gathered, merged, reported).
# Reports samples/s, speech-seconds/s, achieved TFLOP/s and its share of the GPU's bf16 peak, peak GPU memory and
# eval clips/s; writes $OUT/gpu_check.json and prints a table for the README ("Scaling out").
#
# Run as (from the project root, on a machine with an NVIDIA GPU):
#   bash scripts/gpu_check.sh
#   OUT=/tmp/gpu-check SMALL=openai/whisper-small bash scripts/gpu_check.sh
#
# Installs with scripts/setup.sh unless .venv already has a CUDA torch; deepspeed best effort (its step is skipped
# without it). Models: BASE (default ../shared/models/whisper-base, else openai/whisper-base) and SMALL (default
# openai/whisper-small; without the Hub, random weights in whisper-small's shape: the same FLOPs and memory, not
# its WER). Data: ../shared/data/es-synth when present, else the demo corpus (scripts/make_demo_data.py).
# PEAK_TFLOPS overrides the GPU's dense bf16 peak taken from its name (H100/H200 989, A100 312, L40S 362, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
py=.venv/bin/python
step_limit="${STEP_LIMIT_S:-150}"  # seconds per step: the whole check stays within 8 minutes

# 1. Install (a CUDA torch from PyPI: setup.sh pins the version, pip picks the CUDA build on Linux x86-64).
if ! "$py" -c "import torch, finetune; assert torch.cuda.is_available()" 2>/dev/null; then
  bash scripts/setup.sh
fi
"$py" -c "import deepspeed" 2>/dev/null || .venv/bin/pip install -q deepspeed 2>/dev/null \
  || echo "gpu_check: deepspeed could not be installed: the ZeRO-3 step is skipped"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"

# 2. Models and data.
base="${BASE:-../shared/models/whisper-base}"
[ -d "$base" ] || base=openai/whisper-base
small="$("$py" - "$base" "${SMALL:-openai/whisper-small}" "$out/whisper-small-shape" <<'EOF'
import sys
from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor
base, small, folder = sys.argv[1:]
try:
    WhisperConfig.from_pretrained(small)
    print(small)
except OSError:  # no Hub here: whisper-small's shape with random weights and whisper-base's tokenizer
    config = WhisperConfig.from_pretrained(base)
    config.update({"d_model": 768, "encoder_layers": 12, "decoder_layers": 12, "encoder_attention_heads": 12,
                   "decoder_attention_heads": 12, "encoder_ffn_dim": 3072, "decoder_ffn_dim": 3072})
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    WhisperProcessor.from_pretrained(base).save_pretrained(folder)
    print(folder)
EOF
)"
[ -d data/demo-es ] || "$py" scripts/make_demo_data.py  # both recipes score its unseen voices
recipe=recipes/demo.yaml
[ -d ../shared/data/es-synth ] && recipe=recipes/es-synth-base.yaml
gpu=(train.bf16=true train.fp16=false model.attn_implementation=sdpa "eval.precision=bf16")

# 3. Measurements: one JSON per step; a step that fails or runs out of time is recorded as such.
run_step() {  # name, command...
  local name=$1; shift
  echo "gpu_check: $name" >&2
  if timeout "$step_limit" "$@" > "$out/$name.log" 2>&1; then echo ok > "$out/$name.status"
  else echo "failed ($?)" > "$out/$name.status"; tail -20 "$out/$name.log" >&2; fi
}
bench=(-m finetune benchmark "$recipe" "${gpu[@]}" --eval-clips 32)
run_step base-bf16 "$py" "${bench[@]}" model.name="$base" train.per_device_train_batch_size=16 --steps 8 \
  --output "$out/base-bf16.json"
run_step small-bf16 "$py" "${bench[@]}" model.name="$small" train.per_device_train_batch_size=16 --steps 8 \
  --output "$out/small-bf16.json"
launch=("$py" -m accelerate.commands.launch --num_processes 1 --num_machines 1)
run_step fsdp-small "${launch[@]}" --config_file recipes/accelerate/fsdp.yaml "${bench[@]}" model.name="$small" \
  train.per_device_train_batch_size=16 --steps 4 --output "$out/fsdp-small.json"
if "$py" -c "import deepspeed" 2>/dev/null; then
  run_step zero3-small "${launch[@]}" --config_file recipes/accelerate/deepspeed-zero3.yaml "${bench[@]}" \
    model.name="$small" train.per_device_train_batch_size=16 --steps 4 --output "$out/zero3-small.json"
fi
run_step fsdp-train "${launch[@]}" --config_file recipes/accelerate/fsdp.yaml -m finetune train "$recipe" "${gpu[@]}" \
  model.name="$base" output_dir="$out/fsdp-run" train.max_steps=6 train.eval_steps=3 "data.train.0.max_samples=96" \
  "data.eval.0.max_samples=16" "output.adapter_scale=1.0" --overwrite

# 4. Summary: gpu_check.json and a Markdown table.
"$py" - "$out" <<'EOF'
import json, os, sys
from pathlib import Path
out = Path(sys.argv[1])
gpu = (out / "gpu.txt").read_text().split(",")[0].strip()
peaks = {"H200": 989, "H100": 989, "A100": 312, "L40S": 362, "L4": 121, "A10": 125, "4090": 165, "3090": 71}
peak = float(os.environ.get("PEAK_TFLOPS") or next((v for k, v in peaks.items() if k in gpu), 0)) or None
rows, result = [], {"gpu": gpu, "bf16_peak_tflops": peak, "steps": {}}
for name in ("base-bf16", "small-bf16", "fsdp-small", "zero3-small", "fsdp-train"):
    status_file = out / f"{name}.status"
    if not status_file.exists():
        continue
    entry = {"status": status_file.read_text().strip()}
    bench = out / f"{name}.json"
    if bench.exists():
        b = json.loads(bench.read_text())
        t = b["train"]
        tflops = t["achieved_gflops"] / 1000
        entry.update(model=b["model"], samples_per_s=t["samples_per_s"], speech_seconds_per_s=t["speech_seconds_per_s"],
                     achieved_tflops=tflops, share_of_bf16_peak=tflops / peak if peak else None,
                     peak_gpu_memory_gb=b["memory"].get("peak_gpu_allocated_gb"), eval_clips_per_s=b["eval"]["clips_per_s"])
        share = f"{100 * tflops / peak:.0f} %" if peak else "-"
        rows.append(f"| {name} | {t['samples_per_s']:.1f} | {t['speech_seconds_per_s']:.0f} | {tflops:.1f} | {share} | "
                    f"{entry['peak_gpu_memory_gb'] or 0:.1f} | {b['eval']['clips_per_s']:.1f} |")
    report = out / "fsdp-run" / "report.json"
    if name == "fsdp-train" and report.exists():
        entry["report"] = {k: v["fine_tuned"]["wer"] for k, v in json.loads(report.read_text())["sets"].items()}
        entry["merged"] = (out / "fsdp-run" / "merged" / "model.safetensors").exists()
    result["steps"][name] = entry
(out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
print(f"{gpu}, bf16 peak {peak} TFLOP/s\n")
print("| step | samples/s | speech s/s | TFLOP/s | share of bf16 peak | peak GPU GB | eval clips/s |\n|---|---|---|---|---|---|---|")
print("\n".join(rows))
print("\n" + "\n".join(f"{k}: {v['status']}" for k, v in result["steps"].items()))
EOF
