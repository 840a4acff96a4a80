"""Length-generalisation evaluation: PLG and RLG checks and the search for the largest passing n."""

from dfst.evaluation.lg import CHECKS, LGPair, LGReport, PairResult, evaluate, lg_pairs
from dfst.evaluation.search import LGSearchResult, SearchStep, lg_search

__all__ = [
    "CHECKS",
    "LGPair",
    "LGReport",
    "LGSearchResult",
    "PairResult",
    "SearchStep",
    "evaluate",
    "lg_pairs",
    "lg_search",
]
