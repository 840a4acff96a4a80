"""Plot RLG against training iterations for a run made by experiments/rlg_curve.py.

Usage: python experiments/plot_rlg.py RUN_DIR OUTPUT.png TITLE

RLG at a probe is the largest probed digit count n such that the model is
exact on every repdigit pair at n and at every smaller probed count (0 if it
fails the smallest).  The training loss is drawn on a second axis.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def probed_rlg(results: dict[int, bool]) -> int:
    best = 0
    for digits in sorted(results):
        if not results[digits]:
            break
        best = digits
    return best


def main() -> None:
    run, output, title = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    records = [json.loads(line) for line in (run / "train.jsonl").read_text().splitlines()]
    losses = [(r["iteration"], r["loss"]) for r in records if "loss" in r]
    raw = {r["iteration"]: {int(k): v for k, v in r["rlg_probe"].items()} for r in records if "rlg_probe" in r}
    extracted: dict[int, dict[int, bool]] = {}
    for line in (run / "extracted_probes.jsonl").read_text().splitlines():
        r = json.loads(line)
        extracted.setdefault(r["iteration"], {})[r["digits"]] = r["extracted_rlg"]

    figure, axis = plt.subplots(figsize=(7, 4))
    for label, probes, style in (("trained", raw, "o-"), ("trained + extracted", extracted, "s--")):
        iterations = sorted(i for i in probes if i in raw)
        axis.plot(iterations, [max(probed_rlg(probes[i]), 0.5) for i in iterations], style, label=label)
    axis.set_yscale("log", base=2)
    axis.set_xlabel("training iteration")
    axis.set_ylabel("RLG over probed n (0 drawn as 0.5)")
    top = max(max(r) for r in raw.values())
    axis.axhline(top, color="grey", linewidth=0.5)
    axis.text(0, top, f" largest probed n = {top}", va="bottom", fontsize=8)
    loss_axis = axis.twinx()
    loss_axis.plot(*zip(*losses, strict=True), color="grey", alpha=0.5, linewidth=1, label="batch loss")
    loss_axis.set_yscale("log")
    loss_axis.set_ylabel("batch training loss")
    axis.legend(loc="center right")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(output, dpi=120)


if __name__ == "__main__":
    main()
