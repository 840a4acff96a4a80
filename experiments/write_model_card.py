"""Write the model card NAME.md of a shipped checkpoint from its JSON metadata.

Usage: python experiments/write_model_card.py dfst/models/add10.safetensors "TRAINING COMMAND"
"""

from __future__ import annotations

import sys
from pathlib import Path

from dfst.checkpoint import load_checkpoint
from dfst.experts import get_expert

HARDWARE = "one core of an Intel Xeon (x86_64) virtual machine with 2 cores, shared with other jobs"


def lg_rows(lg: dict) -> list[str]:
    rows = []
    for digits in sorted(lg, key=int):
        record = lg[digits]
        verdicts = record["verdicts"]
        rows.append(
            f"| {digits} | {'pass' if verdicts['plg'] else 'FAIL'} | {'pass' if verdicts['rlg'] else 'FAIL'} | "
            f"{record['rollouts']} | {record['total_steps']:,} | {record['wall_seconds']} |"
        )
    return rows


def main() -> None:
    path = Path(sys.argv[1])
    command = sys.argv[2]
    weights, meta = load_checkpoint(path)
    expert = get_expert(meta["task"])
    config = meta["training_config"]
    extraction = meta["extraction"]
    lg = meta.get("lg", {})
    passed = [int(d) for d, r in lg.items() if all(r["verdicts"].values())]
    operation = "multiplication" if meta["task"].startswith("mult") else "addition"
    lines = [
        f"# Model card: {path.stem}",
        "",
        f"Task `{meta['task']}` ({expert.alphabet.radix}-ary {operation}), variant **{meta['variant']}**: a DFST "
        "trained by next-action prediction on expert traces, then turned into an exact automaton by "
        "post-training extraction (state-space clustering of the trained model's hidden vectors on the "
        "training inputs, transitions and actions read off the trained model's own outputs, rebuilt in the "
        "one-hot form of Theorem 2.1 of \"Exact Learning of Arithmetic with Differentiable Agents\", "
        "arXiv 2511.22751). The expert's states are never used: not as targets, not for initialisation, "
        "not in the extraction.",
        "",
        "## Reproduce",
        "",
        "```",
        command,
        "```",
        "",
        "then copy `OUT/extracted.safetensors` and `OUT/extracted.json` here and measure LG with "
        f"`python experiments/measure_lg.py dfst/models/{path.name} DIGITS...`.",
        "",
        "## Numbers",
        "",
        f"- weights sha256: `{meta['sha256']}`; K = {weights.num_symbols}, d = {weights.hidden_dim} "
        f"(extracted states; the expert has {expert.num_states}), {weights.num_parameters:,} parameters",
        f"- trained model before extraction: d = {config['hidden_dim'] or expert.num_states}, "
        f"{config['iterations']:,} Adam iterations, batch {config['batch_size']}, lr {config['learning_rate']}, "
        f"cosine to 0, {config['dtype']}, seed {config['seed']}",
        f"- training data: DS with k = {meta['data_selection']['exhaustive_digits']}, "
        f"n = {meta['data_selection']['digits']}, N = {meta['data_selection']['samples']}, "
        f"selection seed {meta['data_selection']['seed']}, plus covering pairs {meta['covering_pairs'] or 'none'} "
        f"({meta['dataset_pairs']} pairs in all, dataset sha256 `{meta['dataset_hash'][:16]}…`)",
        f"- final training loss of the trained model (mean over every training step): {meta['final_loss']:.3g}",
        f"- training wall time: {meta['wall_time_s']} s on {HARDWARE}",
        f"- extraction: {extraction['states']} states, clustering radius {extraction['radius']:.3g}, "
        f"{extraction['transitions_seen']} (state, symbol) transitions seen; the extracted and the trained "
        f"model differ on {extraction['differences_on_training_steps']} training steps",
        "",
        "## Length generalisation (measured with `dfst.evaluation.evaluate`, float32, one worker)",
        "",
        "PLG checks 5 random pairs with exactly n digits and 5 with at most n digits; RLG checks every "
        "n-digit repdigit pair.",
        "",
        "| n | PLG | RLG | rollouts | steps | seconds |",
        "|---|---|---|---|---|---|",
        *lg_rows(lg),
        "",
        f"Exact at every n measured up to {max(passed) if passed else 'none'} digits. Larger n was not measured.",
        "",
    ]
    path.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
