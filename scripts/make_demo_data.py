"""Synthesize the small Spanish demo corpus with espeak-ng: licence-clean, offline, a few seconds to make.

Run as:
    python scripts/make_demo_data.py                 # -> data/demo-es/{train,validation,test}, calls.*; data/demo-en
    python scripts/make_demo_data.py --out /tmp/demo --force

The sentences below were written for this project (public domain). Train and validation use espeak-ng voices that
also speak in ../shared/data/es-synth's training split; test uses voices and sentences that appear nowhere else,
so it measures how a model copes with unseen voices. Audio is written as FLAC at espeak-ng's native 22.05 kHz, so
the training pipeline's resampling to 16 kHz is exercised too. `calls.csv` (MP3) and `calls.jsonl` (MP4 video)
list 12 more training clips in other containers; `data/demo-en/test` holds 24 English clips, a guard set that Spanish
fine-tuning must not make worse. Needs Debian's espeak-ng and ffmpeg.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import soundfile as sf

SENTENCES = [
    "El tren de las ocho sale del andén tres.",
    "Mañana lloverá en el norte del país.",
    "Necesito una mesa para cuatro personas.",
    "La biblioteca abre a las nueve de la mañana.",
    "Mi hermano trabaja en un hospital de Sevilla.",
    "Por favor, cierre la puerta al salir.",
    "El museo está cerrado los lunes.",
    "Compramos pan, leche y dos kilos de naranjas.",
    "La reunión empieza dentro de diez minutos.",
    "¿Dónde está la parada del autobús?",
    "Hoy el cielo está despejado y hace calor.",
    "Los niños juegan en el parque después de clase.",
    "El médico me recomendó caminar todos los días.",
    "Quiero cambiar mi billete para el viernes.",
    "La cocina de mi abuela siempre huele a café.",
    "El gato duerme encima del sofá.",
    "Esta calle lleva al centro de la ciudad.",
    "Tenemos que terminar el informe antes del jueves.",
    "La película dura casi dos horas.",
    "El agua del río está muy fría en invierno.",
    "Mi teléfono no tiene batería.",
    "La farmacia de guardia está en la plaza mayor.",
    "Vamos a la playa el próximo fin de semana.",
    "El profesor explicó la lección con paciencia.",
    "He perdido las llaves de casa otra vez.",
    "El vuelo llegará con media hora de retraso.",
    "Las entradas del concierto se agotaron en un día.",
    "¿Cuánto cuesta una habitación doble?",
    "El jardín tiene rosas rojas y blancas.",
    "Mi vecina toca el piano por las tardes.",
    "El ordenador se apagó sin avisar.",
    "Hace falta más sal en la sopa.",
    "La tienda de la esquina vende fruta fresca.",
    "El partido terminó con empate a dos.",
    "Escribe tu nombre en la primera línea.",
    "Los pájaros cantan al amanecer.",
    "El ascensor no funciona desde ayer.",
    "Mi abuelo cuenta historias de su pueblo.",
    "La carta llegó con una semana de retraso.",
    "El banco cierra a las dos de la tarde.",
    # validation
    "El café de esta cafetería es excelente.",
    "Nos vemos en la estación a las seis.",
    "La montaña está cubierta de nieve.",
    "Mi hija aprende a nadar en la piscina.",
    "El taxi espera en la puerta del hotel.",
    "Apaga la luz cuando salgas de la habitación.",
    "El mercado está lleno los sábados.",
    "Esta semana trabajo desde casa.",
    # test: sentences and voices that occur nowhere else
    "El puerto recibe barcos de todo el mundo.",
    "Mi madre prepara una tortilla de patatas.",
    "La carretera estaba cortada por la tormenta.",
    "El cartero deja las cartas en el buzón.",
    "Los estudiantes esperan las notas del examen.",
    "El reloj de la torre marca las doce.",
    "Prefiero el té verde sin azúcar.",
    "La orquesta ensaya todos los martes.",
    "El pescado fresco se vende temprano.",
    "Mi bicicleta tiene una rueda pinchada.",
    "El pueblo celebra sus fiestas en agosto.",
    "La lavadora hace un ruido extraño.",
]
# An English guard set (recipes/es-synth-base.yaml): Spanish fine-tuning must not wreck another language.
ENGLISH = [
    "The train to the airport leaves every twenty minutes.",
    "Please send me the report before Friday.",
    "It will be cloudy in the morning and sunny later.",
    "The library closes at eight on weekdays.",
    "My sister bought a new bicycle last week.",
    "We need two more chairs for the meeting room.",
    "The coffee shop on the corner opens early.",
    "He forgot his umbrella at the station.",
    "The children are playing football in the park.",
    "Turn left at the second traffic light.",
    "The museum has a new exhibition about ships.",
    "Dinner will be ready in half an hour.",
]
ENGLISH_VOICES = ["en-us", "en+m3", "en-us+f2", "en+f4"]
SPLITS = {  # name: (first sentence, last sentence + 1, espeak-ng voices); each sentence is read by 2 voices
    "train": (0, 40, ["es+m2", "es+f2", "es+m4", "es+f4", "es-419+m5", "es-419+f3", "es+klatt2", "es+pedro"]),
    "validation": (40, 48, ["es+m6", "es+f5", "es-419+m2", "es-419+f1"]),
    "test": (48, 60, ["es+m1", "es+m3", "es+Alicia", "es+Mario", "es+steph", "es-419+grandma", "es+klatt3"]),
}
READINGS = 2  # voices per sentence
# Extra training clips in other containers, listed by manifests with their own column names (recipes/demo-mixed.yaml):
# a CSV of MP3s and a JSONL of MP4 videos (a still frame + the speech as the audio track).
EXTRA = {"calls.csv": (".mp3", ["es+f3", "es-419+m6"], range(0, 6)),
         "calls.jsonl": (".mp4", ["es+m7", "es-419+f5"], range(6, 12))}


def synthesize(text: str, voice: str, speed: int, pitch: int, path: Path) -> float:
    """espeak-ng -> WAV (22.05 kHz) -> FLAC at `path`; returns the duration in seconds."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as wav:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", wav.name, text],
                       check=True, capture_output=True)
        audio, rate = sf.read(wav.name, dtype="int16")
    sf.write(path, audio, rate, format="FLAC")
    return len(audio) / rate


def make_split(root: Path, split: str, first: int, last: int, voices: list[str],
               sentences: list[str] = SENTENCES) -> int:
    folder = root / split
    folder.mkdir(parents=True)
    rows = []
    readings = [(text, voices[(k * READINGS + r) % len(voices)])
                for k, text in enumerate(sentences[first:last]) for r in range(READINGS)]
    for i, (text, voice) in enumerate(readings):
        speed, pitch = 140 + (i * 7) % 40, 35 + (i * 11) % 30  # words/min, 0-99: varied but reproducible
        name = f"{split}_{i:04d}.flac"
        duration = synthesize(text, voice, speed, pitch, folder / name)
        rows.append({"file_name": name, "transcription": text, "voice": f"espeak:{voice}",
                     "duration": round(duration, 3)})
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def make_extra(root: Path) -> int:
    """MP3 and MP4 copies of new readings, listed in calls.csv (clip,words) and calls.jsonl (audio_file, ref)."""
    folder = root / "extra"
    folder.mkdir(parents=True)
    total = 0
    for manifest, (suffix, voices, sentences) in EXTRA.items():
        rows = []
        for k, i in enumerate(sentences):
            flac = folder / f"{i:04d}.flac"
            synthesize(SENTENCES[i], voices[k % len(voices)], 150, 50, flac)
            out = flac.with_suffix(suffix)
            video = ["-f", "lavfi", "-i", "color=c=black:s=64x64:r=5", "-map", "1:v", "-map", "0:a", "-shortest",
                     "-pix_fmt", "yuv420p"] if suffix == ".mp4" else []
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(flac), *video, str(out)], check=True)
            flac.unlink()
            rows.append((f"extra/{out.name}", SENTENCES[i]))
        with open(root / manifest, "w", newline="", encoding="utf-8") as f:
            if manifest.endswith(".csv"):
                writer = csv.writer(f)
                writer.writerow(["clip", "words"])
                writer.writerows(rows)
            else:
                f.writelines(json.dumps({"audio_file": path, "ref": text}, ensure_ascii=False) + "\n"
                             for path, text in rows)
        total += len(rows)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/demo-es"))
    parser.add_argument("--english-out", type=Path, default=Path("data/demo-en"), help="the English guard set")
    parser.add_argument("--force", action="store_true", help="replace an existing corpus")
    args = parser.parse_args()
    missing = [tool for tool in ("espeak-ng", "ffmpeg") if shutil.which(tool) is None]
    if missing:
        print(f"error: {' and '.join(missing)} not found; install with: sudo apt-get install {' '.join(missing)} "
              f"(or run bash scripts/setup.sh)", file=sys.stderr)
        return 2
    if args.out.exists():
        if not args.force:
            print(f"{args.out} exists; nothing to do (--force rebuilds it)")
            return 0
        shutil.rmtree(args.out)
    for split, (first, last, voices) in SPLITS.items():
        print(f"{split}: {make_split(args.out, split, first, last, voices)} clips")
    print(f"extra (mp3 + mp4, for recipes/demo-mixed.yaml): {make_extra(args.out)} clips")
    # A sibling folder, not a subfolder: audiofolder would fold any nested test/ into demo-es's test split.
    shutil.rmtree(args.english_out, ignore_errors=True)
    english = make_split(args.english_out, "test", 0, len(ENGLISH), ENGLISH_VOICES, ENGLISH)
    print(f"{args.english_out}/test (English guard set): {english} clips")
    print(f"demo corpus written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
