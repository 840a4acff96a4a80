"""Train with RLG probes of the raw model and of its extracted automaton, for the RLG-vs-iterations curve.

Usage: python experiments/rlg_curve.py OUT --task add10 [any python -m dfst.training option]

The raw model's probes go to OUT/train.jsonl, the trainer's log.  At each
probe the automaton extracted from the current weights is probed at the same
digit counts, and the results go to OUT/extracted_probes.jsonl.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from dfst.data import build_dataset
from dfst.training.__main__ import _parser
from dfst.training.extract import ExtractionError, extract_automaton
from dfst.training.loop import TrainConfig, train, training_pairs
from dfst.training.probes import rlg_probe


def main() -> None:
    arguments = vars(_parser().parse_args(sys.argv[1:]))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(arguments.pop("out"))
    arguments.pop("extract")
    arguments["probe_digits"] = tuple(arguments["probe_digits"])
    config = TrainConfig(**arguments)
    pairs, extra = training_pairs(config)
    traces = build_dataset(config.task, pairs + extra)
    cache: dict[str, object] = {}
    iteration = {"value": 0}

    def progress(record):
        iteration["value"] = record["iteration"]

    def probe(weights, task, digits):
        key = weights.sha256()
        if cache.get("key") != key:
            cache["key"] = key
            try:
                cache["extracted"] = extract_automaton(weights, traces)
            except ExtractionError:
                cache["extracted"] = None
        extraction = cache["extracted"]
        extracted_ok = extraction is not None and rlg_probe(extraction.weights, task, digits)
        record = {
            "iteration": iteration["value"],
            "digits": digits,
            "extracted_rlg": bool(extracted_ok),
            "states": None if extraction is None else extraction.num_states,
        }
        with (out / "extracted_probes.jsonl").open("a") as file:
            file.write(json.dumps(record) + "\n")
        return rlg_probe(weights, task, digits)

    out.mkdir(parents=True, exist_ok=True)
    result = train(config, out, progress=progress, probe=probe)
    print(f"iterations {result.iterations_done}, loss {result.final_loss:.3e}")


if __name__ == "__main__":
    main()
