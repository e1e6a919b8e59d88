"""Completion predictor: how right and how early is call-summary.predicted-complete?

Replays held-out simulated traffic (seeds the packaged model never saw) through the real
per-call logic and measures the packaged trained model beside the heuristic, with the
production timer (complete_after 1800 s) and a shortened one (60 s, traffic compressed 30
times to match). Figures: precision (share of predicted-complete summaries whose content
equals the complete summary's), coverage, seconds from the call's end to the prediction
(median, p90; and the median over all calls, an unpredicted call counting at its complete
summary), and seconds of lead before the complete summary.

Twilio's own prediction comes about 10 minutes after the call; the targets here are
precision >= 99 % and a median within 2 minutes of the end (4 s at 60 s / compress 30).
"""

from __future__ import annotations

import time
from typing import Final

from rich.console import Console

from callstream.insights.predictor import TrainedPredictor
from callstream.insights.predictor_api import CompletionPredictor, HeuristicPredictor
from callstream.insights.replay import Scenario, evaluate
from callstream.predictor_cli import figures_table

SCENARIOS: Final = {
    "1800s": Scenario(calls=2000, seed=301),
    "60s": Scenario(calls=1500, seed=302, complete_after=60.0, compress=30.0),
}
FIGURES: Final = (
    "precision",
    "coverage",
    "median_after_end",
    "p90_after_end",
    "median_after_end_all",
    "median_lead",
    "p90_lead",
)


def main() -> dict[str, float]:
    console = Console(width=120)
    predictors: dict[str, CompletionPredictor] = {
        "trained": TrainedPredictor.load(),
        "heuristic": HeuristicPredictor(),
    }
    results: dict[str, float] = {}
    began = time.perf_counter()
    for label, scenario in SCENARIOS.items():
        evaluation = evaluate(scenario, predictors)
        console.print(figures_table(evaluation))
        for name, figures in evaluation.figures.items():
            for figure in FIGURES:
                results[f"{name}_{label}_{figure}"] = float(getattr(figures, figure))
    results["seconds"] = time.perf_counter() - began
    console.print(f"{results['seconds']:.0f} s")
    return results


if __name__ == "__main__":
    main()
