"""Extract an automaton from a trained run and measure LG of the raw and extracted models.

Usage: python experiments/evaluate_run.py RUN_DIR [DIGITS ...]

RUN_DIR holds model.safetensors (or only training_state.safetensors, for a run
still in progress).  Prints one JSON line per (variant, digits) with the PLG
and RLG checks (5 exact-length random pairs, 5 at-most-length random pairs,
the repdigit pairs), and writes extracted.safetensors + extracted.json.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from closed_loop import rollout  # noqa: E402

from dfst.checkpoint import load_checkpoint, load_tensors, save_checkpoint  # noqa: E402
from dfst.data import build_dataset, random_operand, repdigit_pairs  # noqa: E402
from dfst.experts import get_expert  # noqa: E402
from dfst.training.extract import agrees_on_traces, extract_automaton  # noqa: E402
from dfst.training.loop import TrainConfig, training_pairs  # noqa: E402
from dfst.weights import DFSTWeights  # noqa: E402


def load_run(run: Path):
    if (run / "model.safetensors").exists():
        weights, metadata = load_checkpoint(run / "model.safetensors")
        return weights, TrainConfig.from_json(metadata["training_config"]), metadata
    from safetensors import safe_open

    tensors = load_tensors(run / "training_state.safetensors")
    with safe_open(str(run / "training_state.safetensors"), framework="numpy") as file:
        document = json.loads(file.metadata()["dfst_training_state"])
    weights = DFSTWeights(*(tensors[f"param.{n}"].astype(np.float32) for n in ("A", "B", "C", "h0")))
    return weights, TrainConfig.from_json(document["config"]), {"iterations": document["iteration"]}


def lg_pairs(task: str, digits: int, seed: int = 0):
    radix = get_expert(task).alphabet.radix
    rng = random.Random(seed)
    exact = [(random_operand(rng, digits, radix, True), random_operand(rng, digits, radix, True)) for _ in range(5)]
    at_most = [(random_operand(rng, digits, radix), random_operand(rng, digits, radix)) for _ in range(5)]
    return exact + at_most, repdigit_pairs(digits, radix)


def check(weights, task, digits):
    plg_pairs, rlg_pairs = lg_pairs(task, digits)
    started = time.perf_counter()
    plg = all(rollout(weights, task, a, b)[0] == "correct" for a, b in plg_pairs)
    rlg = all(rollout(weights, task, a, b)[0] == "correct" for a, b in rlg_pairs)
    return {"plg_ok": plg, "rlg_ok": rlg, "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    run = Path(sys.argv[1])
    digits_list = [int(x) for x in sys.argv[2:]] or [4, 8, 16, 32, 64]
    weights, config, metadata = load_run(run)
    pairs, extra = training_pairs(config)
    traces = build_dataset(config.task, pairs + extra)
    extraction = extract_automaton(weights, traces)
    differences = agrees_on_traces(weights, extraction.weights, traces)
    closed = sum(rollout(extraction.weights, config.task, a, b)[0] != "correct" for a, b in pairs + extra)
    raw_closed = sum(rollout(weights, config.task, a, b)[0] != "correct" for a, b in pairs + extra)
    print(json.dumps({
        "iterations": metadata.get("iterations"), "states": extraction.num_states, "radius": extraction.radius,
        "spread": extraction.max_spread, "seen": extraction.transitions_seen,
        "teacher_forced_differences": differences, "extracted_wrong_on_training": closed,
        "raw_wrong_on_training": raw_closed,
    }))
    for name, w in (("trained", weights), ("extracted", extraction.weights)):
        for digits in digits_list:
            result = check(w, config.task, digits)
            print(json.dumps({"variant": name, "digits": digits, **result}), flush=True)
            if not (result["plg_ok"] and result["rlg_ok"]):
                break
    if (run / "model.safetensors").exists():
        meta = dict(metadata, variant="trained+extracted", extraction={
            "states": extraction.num_states, "radius": extraction.radius, "max_spread": extraction.max_spread,
            "transitions_seen": extraction.transitions_seen,
            "teacher_forced_differences": differences,
        })
        save_checkpoint(run / "extracted.safetensors", extraction.weights, meta)


if __name__ == "__main__":
    main()
