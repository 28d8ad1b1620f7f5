"""report.html: one self-contained page (figures and audio as data: URIs) that people can read.

Sections: guard-set verdicts, a summary with error bars, the adapter-strength choice with its curve, then one
section per test set with its metrics, most frequent errors and worst utterances (audio player + an alignment with
substitutions, deletions and insertions coloured).
"""

from __future__ import annotations

import base64
import html
import mimetypes
from pathlib import Path
from typing import Any

from finetune.longform import LONG_FORM_HEADER, LONG_FORM_NOTE, long_form_rows
from finetune.report_plots import MODEL_STYLE, figures
from finetune.report_text import shows_change, strength_grid

# per-set metrics and their column headers (short, so the table fits the page)
METRICS = {"wer": "WER", "cer": "CER", "wer_ortho": "WER as written", "cer_ortho": "CER as written",
           "substitutions": "S", "deletions": "D", "insertions": "I", "empty_output_rate": "empty out. %",
           "repeated_ngram_rate": "repeated 3-grams %", "max_length_rate": "hit max length %",
           "real_time_factor": "RTF", "clips_per_second": "clips/s"}
MAX_EMBEDDED_AUDIO = 2_000_000  # bytes: longer files get no player (the page must stay small enough to open)
CSS = """body{font-family:system-ui,sans-serif;max-width:76rem;margin:1.5rem auto;padding:0 1rem;color:#222}
h1{margin-bottom:.3rem} h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
.flag{padding:.5rem .8rem;margin:.4rem 0;border-radius:4px}
.regression{background:#fde8e8;border:1px solid #c00;font-weight:bold}
.noise{background:#fff6dd;border:1px solid #c90} .ok{background:#e8f6e8;border:1px solid #080}
.scroll{overflow-x:auto} table{border-collapse:collapse;font-size:.82rem;margin:.5rem 0}
td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right;white-space:nowrap} th{background:#f3f3f3}
td.l,th.l{text-align:left} td.wrap{white-space:normal;min-width:14rem;text-align:left} tr.chosen td{background:#eef4ff;font-weight:bold}
.better{color:#070} .worse{color:#b00} .muted{color:#777}
figure{display:inline-block;margin:.4rem;vertical-align:top} figcaption{font-size:.8rem;color:#555}
.utt{border:1px solid #ddd;border-radius:4px;padding:.5rem;margin:.5rem 0}
.utt audio{height:2rem;vertical-align:middle} .words{line-height:2.1;font-size:.95rem}
.w{display:inline-block;margin:0 .15rem;text-align:center;vertical-align:top}
.w span{display:block;font-size:.75rem;line-height:1.1}
.S{background:#fdd;border-radius:3px} .D{background:#ffe3b3;border-radius:3px;text-decoration:line-through}
.I{background:#d6ecff;border-radius:3px} .legend span{padding:0 .3rem;margin-right:.4rem}"""


def esc(value: Any) -> str:
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[str]], left: int = 1, classes: list[str] | None = None,
           wrap: int | None = None) -> str:
    """An HTML table; the first `left` columns left-aligned, column `wrap` may wrap; cells are escaped HTML."""
    def kind(i: int) -> str:
        return "l" if i < left else "wrap" if i == wrap else ""

    head = "".join(f'<th class="{kind(i)}">{h}</th>' for i, h in enumerate(header))
    body = "".join(f'<tr class="{(classes or [""] * len(rows))[r]}">' + "".join(
        f'<td class="{kind(i)}">{c}</td>' for i, c in enumerate(row)) + "</tr>" for r, row in enumerate(rows))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _wer(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return '<span class="muted">-</span>'
    low, high = metrics.get("wer_interval", [None, None])
    ci = f' <span class="muted">({low:.1f}-{high:.1f})</span>' if low is not None else ""
    return f"{metrics['wer']:.2f}{ci}"


def _verdict(entry: dict[str, Any]) -> str:
    paired = entry.get("paired")
    if not paired:
        return '<span class="muted">no baseline</span>'
    change = f"{paired['delta']:+.2f} ({paired['low']:+.1f} .. {paired['high']:+.1f}), p={paired['p_value']:.3f}"
    if paired["significantly_worse"]:
        return f'<span class="worse">worse: {change}</span>'
    if paired["significantly_better"]:
        return f'<span class="better">better: {change}</span>'
    return f'<span class="muted">within noise: {change}</span>'


def summary(report: dict[str, Any]) -> str:
    models = [m for m in MODEL_STYLE if any(m in e for e in report["sets"].values())]
    pct = f"{100 * report.get('confidence', 0.95):g} %"
    header = ["set", "clips", *[f"{MODEL_STYLE[m][0]} WER ({pct} CI)" for m in models], "fine-tuned vs zero-shot",
              "CER zero-shot / fine-tuned"]
    rows = []
    for name, e in report["sets"].items():
        cer = " / ".join(f"{e[m]['cer']:.2f}" for m in ("zero_shot", "fine_tuned") if m in e)
        rows.append([esc(name) + (' <span class="muted">(guard)</span>' if e["guard"] else ""), esc(e["utterances"]),
                     *[_wer(e.get(m)) for m in models], _verdict(e), cer])
    return _table(header, rows, wrap=2 + len(models))


def strength_section(report: dict[str, Any], figure: str) -> str:
    strength = report.get("adapter_scale")
    if not strength:
        return ""
    if strength["mode"] == "fixed":
        return f"<h2>Adapter strength</h2><p>Fixed by the recipe: <b>{strength['chosen']:g}</b> (1 = as trained).</p>"
    names, points = strength_grid(strength)
    rows, classes = [], []
    for point, entries in points:
        rows.append([f"{point['scale']:g}", *[_strength_cell(e, point) for e in entries]])
        classes.append("chosen" if point["scale"] == strength["chosen"] else "")
    return (f"<h2>Adapter strength</h2><p>Shipped strength <b>{strength['chosen']:g}</b> (0 = base model, 1 = as "
            f"trained): {esc(strength['reason'])}.</p>{figure}"
            + _table(["strength", *[esc(n) + (" (guard, &Delta; vs 0)" if n in strength["guards"] else " (in-domain)")
                                    for n in names]], rows, classes=classes))


def _strength_cell(e: dict[str, Any] | None, point: dict[str, Any]) -> str:
    if e is None:
        return '<span class="muted">not scored</span>'
    cell = f"{e['wer']:.2f} <span class=\"muted\">({e['low']:.1f}-{e['high']:.1f})</span>"
    if shows_change(e, point):
        cell += f' <span class="{"worse" if e["significantly_worse"] else "muted"}">{e["delta"]:+.2f}</span>'
    return cell


def _audio(path: str | None) -> str:
    if not path or not Path(path).is_file() or Path(path).stat().st_size > MAX_EMBEDDED_AUDIO:
        return ""
    mime = mimetypes.guess_type(path)[0] or "audio/flac"
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<audio controls preload="none" src="data:{mime};base64,{data}"></audio>'


def _alignment(ops: list) -> str:
    cells = []
    for op, ref, hyp in ops:
        if op == "C":
            cells.append(f'<span class="w">{esc(ref)}</span>')
        elif op == "S":
            cells.append(f'<span class="w S" title="substitution">{esc(hyp)}<span>{esc(ref)}</span></span>')
        elif op == "D":
            cells.append(f'<span class="w D" title="deletion">{esc(ref)}</span>')
        else:
            cells.append(f'<span class="w I" title="insertion">{esc(hyp)}</span>')
    return '<div class="words">' + " ".join(cells) + "</div>"


def set_section(name: str, entry: dict[str, Any], audio: list[str]) -> str:
    parts = [f"<h2>{esc(name)}{' (guard set)' if entry['guard'] else ''}</h2>",
             f"<p>{entry['utterances']} clips, {entry['audio_seconds'] / 60:.1f} min; normalizer "
             f"{esc(entry.get('normalizer', ''))}. {_verdict(entry)}</p>"]
    models = [m for m in MODEL_STYLE if m in entry]
    parts.append(_table(["model", *METRICS.values()], [[MODEL_STYLE[m][0], *[
        f"{entry[m][k]:.2f}" if isinstance(entry[m][k], float) else esc(entry[m][k]) for k in METRICS]] for m in models]))
    errors = entry["top_errors"]
    lists = [f"<td class=\"l\"><b>{kind}</b><br>" + "<br>".join(f"{esc(w)} &times;{n}" for w, n in errors[kind])
             + "</td>" for kind in ("substitutions", "deletions", "insertions") if errors[kind]]
    if lists:
        parts.append(f'<div class="scroll"><table><tr>{"".join(lists)}</tr></table></div>')
    for utt in entry.get("worst_aligned", []):
        c, s, d, i = utt["scores"]
        path = audio[utt["id"]] if utt["id"] < len(audio) else None
        parts.append(f'<div class="utt"><b>#{utt["id"]}</b> WER {utt["wer"]:.1f} &middot; {utt["duration"]:.1f} s '
                     f'&middot; C {c} S {s} D {d} I {i} {_audio(path)}{_alignment(utt["ops"])}</div>')
    return "\n".join(parts)


def long_form_section(report: dict[str, Any]) -> str:
    rows = long_form_rows(report)
    if not rows:
        return ""
    cells = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    header = "".join(f"<th>{esc(h)}</th>" for h in LONG_FORM_HEADER)
    return f"<h2>Long-form</h2><p class=\"muted\">{esc(LONG_FORM_NOTE)}</p><table><tr>{header}</tr>{cells}</table>"


def alignment_section(images: dict[str, str]) -> str:
    pictures = "".join(figure for key, figure in images.items() if key.startswith("alignment:"))
    if not pictures:
        return ""
    return ('<h2>Alignment</h2><p class="muted">Where the alignment heads (the cross-attention word timestamps '
            "read) look in the audio for each output token: a clean diagonal band keeps timestamps right.</p>"
            + pictures)


def html_page(report: dict[str, Any], flags: list[str], audio: dict[str, list[str]],
              warnings: list[str] | None = None) -> str:
    """The whole page. `flags`: the guard-set lines; `audio`: each set's audio file paths, by utterance id;
    `warnings`: test sets scored on fewer rows than they hold."""
    images = {key: f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                   f"<figcaption>{esc(caption)}</figcaption></figure>"
              for key, (caption, png) in figures(report).items()}
    kind = "regression" if report["regressions"] else "noise" if report.get("within_noise") else "ok"
    flag_html = "".join(f'<div class="flag regression">{esc(line)}</div>' for line in warnings or []) + \
        "".join(f'<div class="flag {kind}">{esc(line)}</div>' for line in flags)
    training = report.get("training") or {}
    legend = ('<p class="legend">Alignments (fine-tuned, normalized words): <span class="S">substitution '
              '(reference below)</span><span class="D">deletion</span><span class="I">insertion</span></p>')
    sets = "\n".join(set_section(name, e, audio.get(name, [])) for name, e in report["sets"].items())
    steps = f"{training['global_step']} training steps; " if "global_step" in training else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>finetune evaluation report</title><style>{CSS}</style></head>
<body><h1>Evaluation report</h1>
<p class="muted">{steps}WER in percent after Whisper's normalizer; intervals are {100 * report.get('confidence', 0.95):g} %
bootstrap intervals over utterances ({report.get('bootstrap_samples', '')} resamples); differences use a paired
bootstrap. A guard set counts as regressed only when it rose by more than {report['guard_threshold']:g} points and
significantly.</p>
{flag_html}
<h2>Summary</h2>{summary(report)}
{images['sets']}{images.get('training', '')}
{strength_section(report, images.get('strength', ''))}
{long_form_section(report)}
{alignment_section(images)}
{legend}
{sets}
<h2>WER by clip duration</h2>{images['duration']}
<script>
// Headless checks read this: how many figures decoded into real images once the page loaded.
window.addEventListener("load", () => {{
  const images = Array.from(document.images);
  document.body.dataset.imagesLoaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = images.length;
}});
</script></body></html>
"""
