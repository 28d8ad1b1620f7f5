"""The report's figures as PNG bytes (matplotlib, Agg backend): training curves, WER per set with error bars, WER
by clip duration, and WER against adapter strength."""

from __future__ import annotations

import io
from typing import Any

MODEL_STYLE = {"zero_shot": ("zero-shot", "tab:gray"), "as_trained": ("as trained", "tab:orange"),
               "fine_tuned": ("fine-tuned", "tab:blue")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    _pyplot().close(fig)
    return buffer.getvalue()


def training_curve(report: dict[str, Any]) -> bytes | None:
    history = report["log_history"]
    losses = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    wers = [(h["step"], h["eval_wer"]) for h in history if "eval_wer" in h and "step" in h]
    if not (losses or wers):
        return None
    fig, ax = _pyplot().subplots(figsize=(7, 3.2))
    if losses:
        ax.plot(*zip(*losses), label="training loss", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if wers:
        ax2 = ax.twinx()
        ax2.plot(*zip(*wers), "o-", label="eval WER (%)", color="tab:red")
        ax2.set_ylabel("eval WER (%)")
    fig.legend(loc="upper center", ncols=2)
    return _png(fig)


def wer_per_set(report: dict[str, Any]) -> bytes:
    """Bars per set and model, with the bootstrap interval as error bars."""
    names = list(report["sets"])
    models = [m for m in MODEL_STYLE if any(m in report["sets"][n] for n in names)]
    fig, ax = _pyplot().subplots(figsize=(8, 3.4))
    width = 0.8 / max(1, len(models))
    for k, model in enumerate(models):
        xs, values, errors = [], [], [[], []]
        for i, name in enumerate(names):
            metrics = report["sets"][name].get(model)
            if metrics:
                low, high = metrics.get("wer_interval", [metrics["wer"], metrics["wer"]])
                xs.append(i + (k - (len(models) - 1) / 2) * width)
                values.append(metrics["wer"])
                errors[0].append(max(0.0, metrics["wer"] - low))
                errors[1].append(max(0.0, high - metrics["wer"]))
        label, color = MODEL_STYLE[model]
        ax.bar(xs, values, width, yerr=errors, capsize=3, label=label, color=color)
    ax.set_xticks(range(len(names)), [n + (" (guard)" if report["sets"][n]["guard"] else "") for n in names],
                  fontsize=7, rotation=15, ha="right")
    ax.set_ylabel("WER (%)")
    ax.legend(fontsize=8)
    return _png(fig)


def wer_by_duration(report: dict[str, Any]) -> bytes:
    fig, ax = _pyplot().subplots(figsize=(7, 3.2))
    for name, entry in report["sets"].items():
        for model, style in (("zero_shot", "--"), ("fine_tuned", "-")):
            buckets = entry.get(model, {}).get("wer_by_duration", [])
            if buckets:
                ax.plot([f"{b['seconds'][0]:g}-{b['seconds'][1]:g}" for b in buckets], [b["wer"] for b in buckets],
                        style, marker="o", label=f"{name}, {MODEL_STYLE[model][0]}")
    ax.set_xlabel("clip duration (s)")
    ax.set_ylabel("WER (%)")
    ax.legend(fontsize=6)
    return _png(fig)


def strength_curve(strength: dict[str, Any]) -> bytes:
    """WER of the in-domain set and each guard set against adapter strength, with intervals; the shipped strength
    marked."""
    fig, ax = _pyplot().subplots(figsize=(7, 3.4))
    for name in [strength["in_domain_set"], *strength["guards"]]:
        points = [(p["scale"], p["sets"][name]) for p in strength["points"] if name in p["sets"]]
        xs = [s for s, _ in points]
        ys = [e["wer"] for _, e in points]
        errors = [[max(0.0, e["wer"] - e["low"]) for _, e in points], [max(0.0, e["high"] - e["wer"])
                                                                       for _, e in points]]
        style = "-" if name == strength["in_domain_set"] else "--"
        ax.errorbar(xs, ys, yerr=errors, fmt=style, marker="o", capsize=3,
                    label=name + ("" if name == strength["in_domain_set"] else " (guard)"))
    # A looping zero-shot model can pass 100 % WER; cap the axis so the useful range stays readable.
    top = max(e["high"] for p in strength["points"] for e in p["sets"].values())
    ax.set_ylim(0, min(top, 100.0) * 1.1 + 1)
    ax.axvline(strength["chosen"], color="black", linewidth=1)
    ax.annotate(f"shipped: {strength['chosen']:g}", (strength["chosen"], ax.get_ylim()[1]), fontsize=8,
                ha="right", va="top")
    ax.set_xlabel("adapter strength (0 = base model, 1 = as trained)")
    ax.set_ylabel("WER (%)")
    ax.legend(fontsize=6)
    return _png(fig)


def alignment_picture(picture: dict[str, Any]) -> bytes:
    """Tokens (rows) against audio time (columns): the alignment heads' standardised cross-attention."""
    import numpy as np

    weights = np.asarray(picture["weights"], dtype=float)
    seconds = weights.shape[1] * picture["frame_s"]
    fig, ax = _pyplot().subplots(figsize=(7, 0.8 + 0.18 * len(picture["tokens"])))
    ax.imshow(weights, aspect="auto", cmap="viridis", extent=(0, seconds, len(picture["tokens"]) - 0.5, -0.5),
              interpolation="nearest")
    ax.set_yticks(range(len(picture["tokens"])))
    ax.set_yticklabels([t.strip() or "·" for t in picture["tokens"]], fontsize=7)
    ax.set_xlabel("audio (s)")
    return _png(fig)


def figures(report: dict[str, Any]) -> dict[str, tuple[str, bytes]]:
    """key -> (caption, PNG) for every figure the report has data for."""
    out = {"sets": ("Zero-shot vs fine-tuned WER per set (bars: bootstrap interval)", wer_per_set(report)),
           "duration": ("WER by clip duration", wer_by_duration(report))}
    curve = training_curve(report)
    if curve:
        out["training"] = ("Training loss and eval WER per step", curve)
    strength = report.get("adapter_scale")
    if strength and strength.get("mode") == "auto":
        out["strength"] = ("WER against adapter strength (in-domain solid, guard sets dashed)",
                           strength_curve(strength))
    for name, entry in report["sets"].items():
        for picture in entry.get("alignment", []):
            out[f"alignment:{name}:{picture['utterance']}"] = (
                f"{name}, utterance #{picture['utterance']}: alignment heads' cross-attention (fine-tuned)",
                alignment_picture(picture))
    return out
