"""Command line: ``python -m dfst.training --task add10 --iterations N --out DIR``.

Every TrainConfig field is an option (``--learning-rate``, ``--seed`` ...).
Running the same command again on the same ``--out`` folder resumes the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from dfst.training.extract import extract_run
from dfst.training.loop import TrainConfig, train

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dfst.training", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder for the state, log and model files")
    parser.add_argument(
        "--extract", action="store_true", help="after training, extract the automaton into extracted.safetensors"
    )
    for field in dataclasses.fields(TrainConfig):
        option = "--" + field.name.replace("_", "-")
        if field.type in ("bool", bool):
            parser.add_argument(option, action=argparse.BooleanOptionalAction, default=field.default)
        elif field.name == "probe_digits":
            parser.add_argument(option, type=int, nargs="+", default=list(field.default))
        elif field.name in ("hidden_dim", "selection_exhaustive_digits", "selection_digits", "selection_samples"):
            parser.add_argument(option, type=int, default=None)
        else:
            parser.add_argument(option, type=type(field.default), default=field.default)
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = vars(_parser().parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = arguments.pop("out")
    extract = arguments.pop("extract")
    arguments["probe_digits"] = tuple(arguments["probe_digits"])
    config = TrainConfig(**arguments)
    result = train(config, out, progress=lambda record: logger.info("%s", record))
    print(f"iterations {result.iterations_done}, loss {result.final_loss:.3e}, model {result.model_path}")
    if extract and result.completed:
        path, extraction = extract_run(out)
        print(f"extracted {extraction.num_states} states into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
