"""``callstream predictor``: train the completion predictor and measure it.

``train`` replays a data directory's own telemetry (or, with ``--simulated``, the
simulated workloads the packaged model is made from), labels every prediction time with
whether the summary was already final, fits the model and writes it as JSON. ``evaluate``
replays a simulated workload the model never saw and compares it with the heuristic.
docs/predictor.md has the details.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from callstream.config import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    # The model and replay code load scikit-learn-sized modules; commands import them when
    # they run, so `callstream --help` and every other command start quickly.
    from callstream.insights import predictor as model_lib
    from callstream.insights.predictor import ModelFile
    from callstream.insights.replay import CallRecord, Evaluation, PredictorFigures
    from callstream.insights.step import EngineConfig
    from callstream.store.interfaces import CallKey

__all__ = ["predictor_app"]

predictor_app = typer.Typer(
    no_args_is_help=True,
    help="Train and evaluate the completion predictor (call-summary.predicted-complete).",
    pretty_exceptions_enable=False,
)

err = Console(stderr=True)
out = Console()

EXIT_FAILED = 1
EXIT_USAGE = 2
PRODUCTION_COMPLETE_AFTER = 1800.0


@contextmanager
def _progress() -> Iterator[model_lib.Progress]:
    """Rich progress bars on stderr, one per phase of the work."""
    from callstream.insights.predictor import Progress as PhaseProgress

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )
    current: list[TaskID] = []

    def start(name: str, total: float | None) -> None:
        if current:
            bars.update(current[-1], total=bars.tasks[-1].completed)
        current.append(bars.add_task(name, total=total))

    def advance(n: int) -> None:
        if current:
            bars.advance(current[-1], n)

    with bars:
        yield PhaseProgress(start=start, advance=advance)
        if current:
            bars.update(current[-1], total=bars.tasks[-1].completed)


def _fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _settings(config: Path | None, **flags: Any) -> Settings:
    try:
        return load_settings(flags, os.environ, config)
    except SettingsError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None


# --- train ----------------------------------------------------------------------------------


@predictor_app.command()
def train(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="Embedded data directory to learn from [env CALLSTREAM_DATA_DIR]."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Model file to write [default: DATA_DIR/predictor.json]."
        ),
    ] = None,
    simulated: Annotated[
        bool,
        typer.Option(
            "--simulated",
            help="Learn from the simulator's workloads instead (how the packaged model is made).",
        ),
    ] = False,
    complete_after: Annotated[
        str | None,
        typer.Option(
            help="The complete timer to label with, e.g. 30m [env CALLSTREAM_COMPLETE_AFTER]."
        ),
    ] = None,
    partial_after: Annotated[
        str | None,
        typer.Option(help="The first-partial timer, e.g. 10s [env CALLSTREAM_PARTIAL_AFTER]."),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file.")] = None,
) -> None:
    """Train a completion predictor and write it as JSON."""
    from callstream.insights.predictor import DATA_DIR_MODEL, PredictorError, write_model

    settings = _settings(
        config, data_dir=data_dir, complete_after=complete_after, partial_after=partial_after
    )
    try:
        if simulated:
            if output is None:
                raise _fail("--simulated needs --output", EXIT_USAGE)
            model = _train_simulated()
        else:
            model = _train_data_dir(settings)
    except PredictorError as exc:
        raise _fail(str(exc)) from None
    target = output or settings.data_dir / DATA_DIR_MODEL
    write_model(model, target)
    _report_model(model, target)


def _train_simulated() -> ModelFile:
    from callstream.insights import predictor as model_lib

    with _progress() as progress:
        data, training = model_lib.simulated_labelled(progress=progress)
        return model_lib.train_model(
            data,
            training,
            [s.describe() for s in model_lib.SHIPPED_VALIDATION],
            progress=progress,
        )


def _train_data_dir(settings: Settings) -> ModelFile:
    from callstream.insights import predictor as model_lib
    from callstream.insights.predictor import MIN_CALLS, PredictorError
    from callstream.insights.step import EngineConfig
    from callstream.server import DATABASE_FILE, open_embedded

    data_dir = settings.data_dir
    if not (data_dir / DATABASE_FILE).is_file():
        raise _fail(f"no callstream data in {data_dir} (no {DATABASE_FILE})", EXIT_USAGE)
    engine = EngineConfig(
        partial_after=settings.partial_after, complete_after=settings.complete_after
    )
    with _progress() as progress:
        services = open_embedded(settings)
        try:
            calls = asyncio.run(_replay_log(services.telemetry, engine, progress))
        finally:
            services.db.close()
        if len(calls) < MIN_CALLS:
            raise PredictorError(
                f"{data_dir} holds {len(calls)} completed call(s) (calls whose complete "
                f"summary, {settings.complete_after:g} s after their end, is already due); "
                f"at least {MIN_CALLS} are needed to train. Let it receive more traffic, "
                "or keep using the packaged model."
            )
        data, training = model_lib.split_labelled(
            calls, data_dir=str(data_dir), complete_after=settings.complete_after
        )
        return model_lib.train_model(data, training, progress=progress)


async def _replay_log(
    log: Any, engine: EngineConfig, progress: model_lib.Progress
) -> dict[CallKey, CallRecord]:
    from callstream.insights.replay import CheckpointRecorder, log_pages

    recorder = CheckpointRecorder(engine)
    progress.start("replaying telemetry", None)
    async for page in log_pages(log):
        recorder.feed(page)
        progress.advance(len(page))
    # Only calls whose complete summary is due by now: later ones may still be missing
    # telemetry that is on its way.
    return recorder.finish(horizon=time.time())


def _report_model(model: ModelFile, path: Path) -> None:
    figures = model.validation
    out.print(
        f"wrote {path}: {len(model.trees)} trees, threshold {model.threshold:.6f}; "
        f"trained on {model.training.calls} calls, validated on {figures.calls}: "
        f"precision {figures.precision:.2%}, coverage {figures.coverage:.1%}, "
        f"median first yes {figures.median_since_end:.3f} x complete_after after the end"
    )


# --- evaluate -------------------------------------------------------------------------------


@predictor_app.command()
def evaluate(
    calls: Annotated[int, typer.Option("--calls", min=1, help="Simulated calls.")] = 1000,
    seed: Annotated[
        int, typer.Option("--seed", help="Simulator seed (the packaged model trained on 101-202).")
    ] = 301,
    complete_after: Annotated[
        str, typer.Option("--complete-after", help="The complete timer, e.g. 1800 or 30m.")
    ] = "1800",
    compress: Annotated[
        float | None,
        typer.Option(
            "--compress",
            min=0.001,
            help="Divide arrival times by this [default: 1800 s / COMPLETE_AFTER, at least 1, "
            "so a shortened timer sees the same share of late data].",
        ),
    ] = None,
    concurrency: Annotated[float, typer.Option(min=0.001, help="Calls in progress at once.")] = 50,
    model: Annotated[
        Path | None, typer.Option("--model", help="Model file [default: the packaged one].")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Measure the trained predictor and the heuristic on simulated calls."""
    from callstream.insights.predictor import PredictorError, TrainedPredictor
    from callstream.insights.predictor_api import CompletionPredictor, HeuristicPredictor
    from callstream.insights.replay import Scenario
    from callstream.insights.replay import evaluate as run_evaluation

    try:
        seconds = _settings(None, complete_after=complete_after).complete_after
        trained = TrainedPredictor.load(model)
    except PredictorError as exc:
        raise _fail(str(exc)) from None
    if seconds <= 0:
        raise _fail("--complete-after must be positive", EXIT_USAGE)
    scenario = Scenario(
        calls=calls,
        seed=seed,
        complete_after=seconds,
        compress=compress or max(1.0, PRODUCTION_COMPLETE_AFTER / seconds),
        concurrency=concurrency,
    )
    predictors: dict[str, CompletionPredictor] = {
        "trained": trained,
        "heuristic": HeuristicPredictor(),
    }
    with _progress() as progress:
        progress.start(f"replaying {calls} calls (seed {seed})", None)
        evaluation = run_evaluation(scenario, predictors, progress=progress.advance)
    if as_json:
        print(json.dumps(evaluation_dict(evaluation), indent=2))
    else:
        out.print(figures_table(evaluation))


def evaluation_dict(evaluation: Evaluation) -> dict[str, Any]:
    """The evaluation as plain JSON-able data (NaN, for a figure with no data, as null)."""
    return {
        "scenario": evaluation.scenario,
        "figures": {
            name: {k: None if _nan(v) else v for k, v in msgspec.to_builtins(f).items()}
            for name, f in evaluation.figures.items()
        },
    }


def figures_table(evaluation: Evaluation) -> Table:
    scenario = evaluation.scenario
    table = Table(
        title=(
            f"{scenario['calls']} simulated calls, seed {scenario['seed']}, complete_after "
            f"{scenario['complete_after']:g} s, compress {scenario['compress']:g}"
        ),
        caption=(
            "after end: seconds from the call's end to predicted-complete (p50, p90; "
            "p50 all: a call never predicted counts at its complete summary). "
            "lead: seconds before the complete summary."
        ),
    )
    table.add_column("predictor")
    for column in (
        "precision",
        "right/predicted",
        "coverage",
        "after end p50",
        "p90",
        "p50 all",
        "lead p50",
        "p90",
    ):
        table.add_column(column, justify="right")
    for name, figures in evaluation.figures.items():
        table.add_row(name, *_row(figures))
    return table


def _row(f: PredictorFigures) -> list[str]:
    return [
        "-" if _nan(f.precision) else f"{f.precision:.2%}",
        f"{f.correct}/{f.predicted}",
        f"{f.coverage:.1%}",
        _seconds(f.median_after_end),
        _seconds(f.p90_after_end),
        _seconds(f.median_after_end_all),
        _seconds(f.median_lead),
        _seconds(f.p90_lead),
    ]


def _seconds(value: float) -> str:
    return "-" if _nan(value) else f"{value:.1f}"


def _nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)
