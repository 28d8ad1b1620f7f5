"""Export a merged Whisper checkpoint to CTranslate2 (faster-whisper), checked against transformers.

Run as `finetune export` (or `python scripts/export.py`), examples below.

--check_audio (repeatable) transcribes the files with transformers and with faster-whisper on the export (greedy,
the checkpoint's language) and prints the WER between the two and both timings; they land in <output>/export.json.
Exit status 1 when the two disagree by more than --max_wer_between (percent).
"""

from __future__ import annotations

import argparse
import sys

from finetune.export import QUANTIZATIONS, export

EXAMPLES = """examples:
  finetune export runs/es-synth-base/merged --quantization int8 --output runs/es-synth-base/ct2-int8 \\
      --check_audio clip.flac
  # then, anywhere faster-whisper is installed:
  #   from faster_whisper import WhisperModel
  #   segments, info = WhisperModel("runs/es-synth-base/ct2-int8", compute_type="int8").transcribe("clip.flac")
exit status: 0 exported (and checked); 1 the export disagrees with transformers; 2 a bad model folder or file"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="merged checkpoint folder (runs/NAME/merged)")
    p.add_argument("--format", choices=["ctranslate2"], default="ctranslate2")
    p.add_argument("--quantization", choices=QUANTIZATIONS, default="int8",
                   help="weight type of the export (int8: smallest and fastest on CPU; float16 for GPUs)")
    p.add_argument("--output", required=True, help="folder to write (replaced atomically)")
    p.add_argument("--check_audio", action="append", default=[], metavar="FILE",
                   help="audio to transcribe with both runtimes for the check (repeatable)")
    p.add_argument("--device", default="cpu", help="device for the check: cpu or cuda")
    p.add_argument("--max_wer_between", type=float, default=15.0,
                   help="fail when faster-whisper and transformers differ by more WER than this (percent)")


def run(args: argparse.Namespace) -> int:
    summary = export(args.model_dir, args.output, args.quantization, args.check_audio, args.device)
    check = summary.get("check")
    if check is None:
        print(f"Exported to {args.output} (not checked: pass --check_audio FILE to compare with transformers)")
        return 0
    for path, ours, theirs in zip(check["audio"], check["transformers"], check["faster_whisper"]):
        print(f"{path}\n  transformers:   {ours}\n  faster-whisper: {theirs}")
    print(f"WER between the two: {check['wer_between']:.2f} % (CER {check['cer_between']:.2f} %); "
          f"transformers {check['transformers_s']:.2f} s, faster-whisper ({check['compute_type']}) "
          f"{check['faster_whisper_s']:.2f} s: {check['speedup']:.2f}x")
    if check["wer_between"] > args.max_wer_between or not any(check["faster_whisper"]):
        print(f"error: the export disagrees with transformers by more than {args.max_wer_between} % WER",
              file=sys.stderr)
        return 1
    return 0

