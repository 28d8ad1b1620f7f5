"""Transcribe audio and video files with a (fine-tuned) Whisper, writing the whisper CLI's output files.

Run as `finetune transcribe` (or `python scripts/transcribe.py`), examples below.

Any length (long files are decoded window by window with segment timestamps), any format ffmpeg reads; a video's
audio track is decoded directly. Writes `<stem>.txt/.vtt/.srt/.tsv/.json` (openai-whisper's layouts) to
--output_dir. A file that cannot be read is reported and skipped; the exit status is 1 when any file failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from finetune.audio import AudioError, load_audio, probe_duration
from finetune.recipe import language_code
from finetune.writers import FORMATS, SubtitleLayout, write_result

if TYPE_CHECKING:  # imported in the functions: `finetune transcribe --help` needs no transformers
    from finetune.transcription import DecodeOptions

EXAMPLES = """examples:
  finetune transcribe call.mp3 meeting.mp4 --model runs/es-synth-base/merged --language es
  finetune transcribe *.flac --model ../shared/models/whisper-base --adapter runs/demo/adapter \\
      --output_format srt --output_dir subs/
  finetune transcribe talk.mkv --model openai/whisper-small --task translate      # language detected
  finetune transcribe call.wav --model runs/es-synth-base/merged --language es --word_timestamps \\
      --max_line_width 42 --max_line_count 2 --initial_prompt "Banco Sabadell, Sra. Pérez."
exit status: 0 every file transcribed; 1 a file failed (the others are written); 2 the model cannot be loaded"""


def optional_float(value: str) -> float | None:
    return None if value.lower() == "none" else float(value)


def language_arg(value: str) -> str:
    try:
        return language_code(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio or video files")
    p.add_argument("--model", required=True, help="checkpoint directory (e.g. runs/NAME/merged) or Hub id")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit of --model")
    p.add_argument("--adapter", default=None, help="peft adapter folder applied on --model (merged in memory)")
    p.add_argument("--language", type=language_arg, default=None,
                   help="spoken language (code or name); detected per file from its first 30 s when left out")
    p.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    p.add_argument("--output_format", "-f", choices=FORMATS, default="all")
    p.add_argument("--output_dir", "-o", default=".")
    p.add_argument("--beam_size", type=int, default=1, help="beams at temperature 0 (1 = greedy)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--temperature_increment_on_fallback", type=optional_float, default=0.2,
                   help="raise the temperature by this when a window fails the thresholds below (none: never)")
    p.add_argument("--compression_ratio_threshold", type=optional_float, default=1.35,
                   help="fallback when the window's token compression ratio is above this (transformers measures "
                        "it on tokens: 1.35 here is openai-whisper's 2.4 on text)")
    p.add_argument("--logprob_threshold", type=optional_float, default=-1.0,
                   help="fallback when the average log-probability is below this")
    p.add_argument("--no_speech_threshold", type=optional_float, default=0.6,
                   help="skip a window as silence when no-speech probability is above this and the log-probability "
                        "is below --logprob_threshold")
    p.add_argument("--condition_on_previous_text", action="store_true",
                   help="prompt each window with the previous one's text (openai-whisper's default; off here because "
                        "models fine-tuned without prompts (data.windows.mode=none) loop more with them)")
    p.add_argument("--initial_prompt", default=None,
                   help="text the first window is prompted with: names, spellings, punctuation style (whisper CLI)")
    p.add_argument("--word_timestamps", action="store_true",
                   help="word times from the cross-attention alignment heads: `words` in the json output, and the "
                        "line options below")
    p.add_argument("--max_line_width", type=int, default=None,
                   help="subtitles (vtt, srt): characters per line before a break; needs --word_timestamps")
    p.add_argument("--max_line_count", type=int, default=None,
                   help="subtitles: lines per cue; needs --max_line_width")
    p.add_argument("--batch_size", type=int, default=8,
                   help="files decoded together, window by window (their audio is held in memory meanwhile)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--verbose", action="store_true", help="print each file's segments")


def check_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.beam_size < 1 or args.batch_size < 1:
        p.error("--beam_size and --batch_size must be at least 1")
    if (args.max_line_width or args.max_line_count) and not args.word_timestamps:
        p.error("--max_line_width/--max_line_count re-flow subtitles by word: add --word_timestamps")
    if args.max_line_count and not args.max_line_width:
        p.error("--max_line_count needs --max_line_width")
    if not 0.0 <= args.temperature <= 1.0:
        p.error(f"--temperature {args.temperature}: must be within [0, 1]")


def decode_options(args: argparse.Namespace) -> DecodeOptions:
    from finetune.transcription import DecodeOptions, temperature_ladder

    return DecodeOptions(
        language=args.language, task=args.task, beam_size=args.beam_size,
        temperatures=temperature_ladder(args.temperature, args.temperature_increment_on_fallback),
        compression_ratio_threshold=args.compression_ratio_threshold, logprob_threshold=args.logprob_threshold,
        no_speech_threshold=args.no_speech_threshold, condition_on_previous_text=args.condition_on_previous_text,
        initial_prompt=args.initial_prompt, word_timestamps=args.word_timestamps)


def probe_inputs(paths: list[str]) -> tuple[dict[str, float], list[str]]:
    """Audio seconds by readable path (from metadata: nothing decoded yet), one message per unreadable file."""
    durations, errors = {}, []
    for path in paths:
        try:
            durations[path] = probe_duration(path)
        except AudioError as err:
            errors.append(str(err))
    return durations, errors


def decode_batch(paths: list[str], errors: list[str]) -> dict[str, object]:
    """Waveforms of one batch (decoded now: memory holds one batch of audio, never all of it)."""
    waveforms = {}
    for path in paths:
        try:
            waveforms[path] = load_audio(path)
        except AudioError as err:
            errors.append(str(err))
            tqdm.write(f"error: {err}", file=sys.stderr)
    return waveforms


def transcribe_all(model, processor, durations_by_path: dict[str, float], args: argparse.Namespace,
                   errors: list[str]) -> None:
    """Every file, `--batch_size` at a time, longest first, with a progress bar over audio seconds; outputs
    written per file; failures appended to `errors`."""
    from finetune.transcription import batches_by_length, transcribe_batch

    paths = list(durations_by_path)
    durations = list(durations_by_path.values())
    options = decode_options(args)
    with tqdm(total=round(sum(durations), 1), unit="audio s", desc=f"{len(paths)} file(s)", file=sys.stderr) as bar:
        for batch in batches_by_length(durations, args.batch_size):
            done_before, batch_s = bar.n, sum(durations[i] for i in batch)
            waveforms = decode_batch([paths[i] for i in batch], errors)
            batch = [i for i in batch if paths[i] in waveforms]

            def progress(seconds: float, base: float = done_before) -> None:
                bar.update(round(base + seconds, 1) - bar.n)
            try:
                results = transcribe_batch(model, processor, [waveforms[paths[i]] for i in batch], options,
                                           progress) if batch else []
            except (RuntimeError, ValueError) as err:  # e.g. out of memory: report these files, go on with the rest
                results = []
                hint = "; try a smaller --batch_size" if "out of memory" in str(err).lower() else ""
                for i in batch:
                    errors.append(f"{paths[i]}: transcription failed ({type(err).__name__}: {err}){hint}")
                    bar.write(f"error: {errors[-1]}")
            bar.update(round(done_before + batch_s, 1) - bar.n)
            for i, result in zip(batch, results):
                written = write_result(result, paths[i], args.output_dir, args.output_format,
                                       SubtitleLayout(args.max_line_width, args.max_line_count))
                bar.write(f"{paths[i]} [{result['language']}, {durations[i]:.1f} s, {len(result['segments'])} "
                          f"segments] -> {', '.join(str(w) for w in written)}")
                if args.verbose:
                    for s in result["segments"]:
                        bar.write(f"[{s['start']:8.2f} --> {s['end']:8.2f}] {s['text'].strip()}")


def run(args: argparse.Namespace) -> int:
    from finetune.transcription import load_for_inference

    # 1. Open every input first: unreadable files are reported before any model time is spent.
    durations, errors = probe_inputs(args.inputs)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    if not durations:
        return 1
    # 2. Model (+ adapter) on CUDA when there is one.
    model, processor = load_for_inference(args.model, args.adapter, args.device, args.revision)
    # 3. Decode longest files first, a batch of files at a time; write each file's outputs when its batch is done.
    start = time.perf_counter()
    transcribe_all(model, processor, durations, args, errors)
    elapsed, audio_s = time.perf_counter() - start, sum(durations.values())
    print(f"{len(args.inputs)} file(s), {audio_s:.1f} s of audio in {elapsed:.1f} s "
          f"({audio_s / max(elapsed, 1e-9):.1f}x real time); {len(errors)} failed", file=sys.stderr)
    return 1 if errors else 0
