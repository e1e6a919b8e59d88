"""The trained completion predictor, the replay harness it is trained on, and its CLI."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Any

import msgspec
import pytest
from typer.testing import CliRunner

from callstream.config import Settings
from callstream.insights import predictor as model_lib
from callstream.insights.call import CallInsights
from callstream.insights.predictor import (
    MODEL_FORMAT,
    BoostingParams,
    CallRows,
    ModelFile,
    PredictorError,
    TrainedPredictor,
    TrainingData,
    Tree,
    ValidationFigures,
    choose_threshold,
    export_trees,
    fit_trees,
    load_predictor,
)
from callstream.insights.predictor_api import FEATURE_NAMES, HeuristicPredictor
from callstream.insights.replay import (
    SIM_ACCOUNT,
    Emitted,
    Replay,
    ReplayArrival,
    Scenario,
    collect_checkpoints,
    content_digest,
    evaluate,
    figures_from_checkpoints,
    replay,
    simulated_arrivals,
    true_ends,
)
from callstream.insights.step import Step
from callstream.model.insights import CallSummary
from callstream.model.telemetry import TelemetryRecord
from callstream.predictor_cli import predictor_app
from callstream.server import open_embedded
from callstream.sim import SimConfig
from callstream.store.interfaces import CallKey, TelemetryChunk, partition_of
from callstream.store.sqlite import telemetry as sqlite_telemetry

SHORT = Scenario(calls=60, seed=11, complete_after=60.0, compress=30.0)
# Held out: the packaged model trained and validated on seeds 101-202.
HELD_OUT = Scenario(calls=400, seed=401)
HELD_OUT_SHORT = Scenario(calls=300, seed=402, complete_after=60.0, compress=30.0)


def _summaries(emitted: Sequence[Emitted]) -> list[tuple[float, CallKey, bytes]]:
    return [
        (e.at, e.call, msgspec.msgpack.encode(e.event))
        for e in emitted
        if isinstance(e.event, CallSummary)
    ]


# --- replay harness -------------------------------------------------------------------------


def test_replay_is_deterministic() -> None:
    def run() -> list[Emitted]:
        logic = CallInsights(SHORT.engine_config(), HeuristicPredictor())
        return replay(logic, simulated_arrivals(SHORT.sim_config()))

    first, second = run(), run()
    summaries = _summaries(first)
    kinds = {msgspec.msgpack.decode(body, type=CallSummary).kind for _, _, body in summaries}
    assert kinds == {"partial", "predicted-complete", "complete"}
    assert summaries == _summaries(second)
    assert [(e.at, e.call, e.event) for e in first] == [(e.at, e.call, e.event) for e in second]


def test_replay_skips_records_it_has_applied() -> None:
    arrivals = list(simulated_arrivals(SHORT.sim_config()))
    # Every tenth record is sent again a little later, as a sensor retries a lost 202.
    retried = sorted(
        [*arrivals, *(a._replace(at=a.at + 1.0) for a in arrivals[::10])], key=lambda a: a.at
    )
    config = SHORT.engine_config()
    once = replay(CallInsights(config, HeuristicPredictor()), arrivals)
    twice = replay(CallInsights(config, HeuristicPredictor()), retried)
    digests = [
        (e.call, e.event.kind, content_digest(e.event))
        for e in once
        if isinstance(e.event, CallSummary) and e.event.kind == "complete"
    ]
    assert digests == [
        (e.call, e.event.kind, content_digest(e.event))
        for e in twice
        if isinstance(e.event, CallSummary) and e.event.kind == "complete"
    ]


def test_replay_fires_the_real_timers_in_due_order() -> None:
    logic = CallInsights(SHORT.engine_config(), HeuristicPredictor())
    runner = Replay(logic)
    runner.fired = []
    runner.run(simulated_arrivals(SHORT.sim_config()))
    times = [at for at, _, _ in runner.fired]
    assert times == sorted(times)
    assert {kind for _, _, kind in runner.fired} >= {"partial", "predict", "complete"}
    assert runner.pending_timers == 0


class _ScriptedLogic:
    """A call logic whose timers are scripted, to watch the harness schedule them."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []

    def new_state(self, account_sid: str, call_sid: str) -> dict[str, int]:
        return {"applies": 0}

    def decode_state(self, raw: bytes) -> Any:
        raise NotImplementedError

    def encode_state(self, state: Any) -> bytes:
        raise NotImplementedError

    def apply(self, state: Any, records: Sequence[TelemetryRecord], now: float) -> Step:
        self.seen.append((f"apply x{len(records)}", now))
        state["applies"] += 1
        if state["applies"] == 1:
            return Step(timers={"c": now + 30, "a": now + 10, "b": now + 20, "d": now + 25})
        if state["applies"] == 2:
            return Step(timers={"b": now + 35, "c": None})  # move b later, cancel c
        return Step()

    def fire(self, state: Any, kind: str, now: float) -> Step:
        self.seen.append((kind, now))
        return Step(timers={"e": now - 5}) if kind == "a" else Step()


def _records(count: int) -> list[TelemetryRecord]:
    arrivals = simulated_arrivals(SimConfig(calls=1, seed=3))
    first = next(arrivals).record
    return [msgspec.structs.replace(first, id=f"{first.id}-{n}") for n in range(count)]


def test_replay_orders_cancels_and_reschedules_timers() -> None:
    logic = _ScriptedLogic()
    one, two, three, four = _records(4)
    Replay(logic).run(
        [
            ReplayArrival(100.0, SIM_ACCOUNT, one),
            ReplayArrival(100.0, SIM_ACCOUNT, two),  # same instant and call: one apply
            ReplayArrival(115.0, SIM_ACCOUNT, three),
            ReplayArrival(125.0, SIM_ACCOUNT, four),  # "d" is due now: it fires after
        ]
    )
    assert logic.seen == [
        ("apply x2", 100.0),
        ("a", 110.0),
        ("e", 110.0),  # set in the past: fired at once, the clock never goes back
        ("apply x1", 115.0),
        ("apply x1", 125.0),
        ("d", 125.0),
        ("b", 150.0),
    ]


# --- the shipped model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> TrainedPredictor:
    return TrainedPredictor.load()


def test_shipped_model_describes_itself(shipped: TrainedPredictor) -> None:
    model = shipped.model
    assert model.format == MODEL_FORMAT
    assert tuple(model.feature_names) == FEATURE_NAMES
    assert 0.5 < model.threshold < 1.0
    assert model.training.source == "simulation"
    seeds = {s["seed"] for s in model.training.scenarios}
    assert seeds and seeds.isdisjoint({HELD_OUT.seed, HELD_OUT_SHORT.seed})
    assert set(model.training.complete_after) >= {60.0, 1800.0}
    assert model.validation.precision >= model.validation.target_precision == 0.995
    assert len(model.trees) == model.params.n_estimators


@pytest.fixture(scope="module")
def held_out(shipped: TrainedPredictor) -> dict[str, Any]:
    predictors = {"trained": shipped, "heuristic": HeuristicPredictor()}
    return {
        "long": evaluate(HELD_OUT, predictors).figures,
        "short": evaluate(HELD_OUT_SHORT, predictors).figures,
    }


def test_shipped_model_is_precise_and_early_on_held_out_calls(held_out: dict[str, Any]) -> None:
    figures = held_out["long"]["trained"]
    assert figures.calls >= 350
    assert figures.precision >= 0.99
    assert figures.median_after_end <= 120.0
    # Counting the calls never predicted at their complete summary too.
    assert figures.median_after_end_all <= 120.0
    assert figures.median_lead >= 1600.0
    assert figures.precision > held_out["long"]["heuristic"].precision


def test_shipped_model_works_with_a_shortened_timer(held_out: dict[str, Any]) -> None:
    figures = held_out["short"]["trained"]
    assert figures.precision >= 0.99
    # complete_after 60 s with traffic 30 times faster: 2 minutes of real time is 4 s.
    assert figures.median_after_end_all <= 4.0


def test_checkpoint_figures_are_what_the_engine_emits(shipped: TrainedPredictor) -> None:
    """The figures come from checkpoints; the engine with the predictor must agree."""
    scenario = Scenario(calls=120, seed=403)
    arrivals = list(simulated_arrivals(scenario.sim_config()))
    calls = collect_checkpoints(scenario.engine_config(), arrivals)
    emitted = replay(CallInsights(scenario.engine_config(), shipped), arrivals)

    predicted: dict[CallKey, tuple[float, bytes]] = {}
    complete: dict[CallKey, bytes] = {}
    for e in emitted:
        if isinstance(e.event, CallSummary) and e.event.kind == "predicted-complete":
            predicted[e.call] = (e.at, content_digest(e.event))
        elif isinstance(e.event, CallSummary) and e.event.kind == "complete":
            complete[e.call] = content_digest(e.event)
    for key, record in calls.items():
        hit = next((c for c in record.checkpoints if shipped.predict(c.features)), None)
        if hit is None:
            assert key not in predicted
            continue
        at, content = predicted[key]
        assert at == hit.at
        assert (content == complete[key]) is hit.final
    figures = figures_from_checkpoints(calls, shipped, true_ends(scenario.sim_config()))
    assert figures.predicted == len(predicted)
    assert figures.correct == sum(predicted[k][1] == complete[k] for k in predicted)


# --- export and inference -------------------------------------------------------------------


def _synthetic_calls(count: int, seed: int) -> list[CallRows]:
    rng = random.Random(seed)
    calls = []
    for _ in range(count):
        vectors = [[rng.random() for _ in FEATURE_NAMES] for _ in range(8)]
        labels = [v[9] + 0.5 * v[10] + rng.gauss(0, 0.2) > 0.6 for v in vectors]
        calls.append(CallRows(vectors, labels, [v[9] for v in vectors]))
    return calls


def _model(trees: list[Tree], threshold: float = 0.5, **changes: Any) -> ModelFile:
    model = ModelFile(
        format=MODEL_FORMAT,
        feature_names=list(FEATURE_NAMES),
        threshold=threshold,
        training=TrainingData(source="simulation", calls=1, checkpoints=1, final_share=0.5),
        validation=ValidationFigures(
            calls=0,
            predicted=0,
            correct=0,
            precision=1.0,
            coverage=0.0,
            median_since_end=0.0,
            target_precision=0.995,
        ),
        params=BoostingParams(),
        sklearn_version="test",
        learning_rate=0.1,
        base_score=0.0,
        trees=trees,
    )
    return msgspec.structs.replace(model, **changes)


def test_json_inference_equals_scikit_learn() -> None:
    import numpy as np

    fitted = fit_trees(_synthetic_calls(200, seed=5), BoostingParams(n_estimators=40))
    raw = msgspec.json.encode(_model(export_trees(fitted)))
    predictor = TrainedPredictor.from_json(raw)

    rng = np.random.default_rng(7)
    vectors = rng.random((3000, len(FEATURE_NAMES)))
    # Values at and next to the split points, where float32 rounding decides the branch.
    for row, tree in zip(vectors[:300], fitted.estimators_[:, 0], strict=False):
        node = int(rng.integers(0, tree.tree_.node_count))
        feature = int(tree.tree_.feature[node])
        if feature >= 0:
            threshold = float(tree.tree_.threshold[node])
            row[feature] = rng.choice([threshold, np.nextafter(threshold, 2), threshold + 1e-9])
    expected = fitted.predict_proba(vectors)[:, 1]
    got = np.array([predictor.raw_score(v.tolist()) for v in vectors])
    assert np.allclose(1 / (1 + np.exp(-got)), expected, rtol=0, atol=1e-12)


def test_model_files_are_checked() -> None:
    leaf = Tree(feature=[-1], threshold=[0.0], left=[-1], right=[-1], value=[1.0])
    loop = Tree(feature=[0, -1], threshold=[0.5, 0.0], left=[0, -1], right=[1, -1], value=[0, 1])
    assert TrainedPredictor(_model([leaf])).raw_score([0.0] * len(FEATURE_NAMES)) == 0.1
    for bad in (
        _model([loop]),
        _model([leaf], feature_names=["since_end"]),
        _model([leaf], format="callstream-predictor/0"),
        _model([leaf], threshold=1.5),
    ):
        with pytest.raises(PredictorError):
            TrainedPredictor(bad)
    with pytest.raises(PredictorError, match="not a predictor model"):
        TrainedPredictor.from_json(b'{"format": "callstream-predictor/1"}')


def test_a_data_directory_model_comes_first(tmp_path: Path) -> None:
    assert load_predictor(tmp_path).model.training.source == "simulation"
    leaf = Tree(feature=[-1], threshold=[0.0], left=[-1], right=[-1], value=[1.0])
    model_lib.write_model(_model([leaf], threshold=0.9), tmp_path / "predictor.json")
    assert load_predictor(tmp_path).threshold == 0.9


def test_threshold_is_the_lowest_that_keeps_first_yes_precision() -> None:
    # 40 calls right at 0.9; 1 wrong at 0.8 (and right later); 10 right at 0.7; 1 wrong at
    # 0.6 and right at 0.7. Only the first yes of a call counts.
    probabilities: list[list[float]] = []
    calls: list[CallRows] = []

    def add(probs: list[float], labels: list[bool]) -> None:
        probabilities.append(probs)
        calls.append(CallRows([[0.0]] * len(probs), labels, [0.0] * len(probs)))

    for _ in range(40):
        add([0.2, 0.9], [False, True])
    add([0.8, 0.95], [False, True])
    for _ in range(10):
        add([0.1, 0.7, 0.99], [False, True, True])
    add([0.6, 0.7], [False, True])

    chosen = choose_threshold(probabilities, calls, target=0.97)
    # At 0.7: 52 predicted, 1 wrong (98.1%); at 0.6 a second wrong one (96.2%).
    assert chosen.value == 0.7
    assert (chosen.predicted, chosen.correct) == (52, 51)
    # Stricter: only thresholds above the 0.8 mistake are safe; 0.9 is the lowest.
    strict = choose_threshold(probabilities, calls, target=0.999)
    assert (strict.value, strict.predicted, strict.correct) == (0.9, 51, 51)
    wrong = CallRows([[0.0]], [False], [0.0])
    with pytest.raises(PredictorError, match="no threshold"):
        choose_threshold([[0.9]] * 10, [wrong] * 10)


# --- the command line -----------------------------------------------------------------------


class _Clock:
    """Stands in for the time module of the telemetry store: appends stamp simulated time."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now


def _write_data_dir(data_dir: Path, calls: int, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(sqlite_telemetry, "time", clock)
    config = SimConfig(
        calls=calls, concurrency=20, seed=seed, compress=30, start=datetime(2024, 1, 1, tzinfo=UTC)
    )
    services = open_embedded(Settings(data_dir=data_dir))
    encoder = msgspec.msgpack.Encoder()

    async def write() -> None:
        log = services.telemetry
        for at, batch in groupby(simulated_arrivals(config), key=lambda a: a.at):
            clock.now = at
            by_partition: dict[int, list[TelemetryRecord]] = {}
            for arrival in batch:
                partition = partition_of(arrival.record.call_sid, log.partitions)
                by_partition.setdefault(partition, []).append(arrival.record)
            chunks = [
                TelemetryChunk(partition, len(records), encoder.encode(records))
                for partition, records in by_partition.items()
            ]
            await log.append(SIM_ACCOUNT, chunks)

    try:
        asyncio.run(write())
    finally:
        services.db.close()


TIMERS = ["--complete-after", "60", "--partial-after", "0.5"]


def test_train_on_a_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_data_dir(tmp_path, calls=150, seed=21, monkeypatch=monkeypatch)
    result = CliRunner().invoke(predictor_app, ["train", "--data-dir", str(tmp_path), *TIMERS])
    assert result.exit_code == 0, result.output
    loaded = load_predictor(tmp_path)
    assert loaded.model.training.source == "data-dir"
    assert loaded.model.training.complete_after == [60.0]
    assert loaded.model.training.calls + loaded.model.validation.calls >= 140
    assert loaded.model.validation.precision >= 0.995
    assert tuple(loaded.model.feature_names) == FEATURE_NAMES

    output = tmp_path / "elsewhere" / "model.json"
    again = CliRunner().invoke(
        predictor_app, ["train", "--data-dir", str(tmp_path), "-o", str(output), *TIMERS]
    )
    assert again.exit_code == 0, again.output
    assert output.read_bytes() == (tmp_path / "predictor.json").read_bytes()


def test_train_refuses_too_few_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_data_dir(tmp_path, calls=20, seed=22, monkeypatch=monkeypatch)
    result = CliRunner().invoke(predictor_app, ["train", "--data-dir", str(tmp_path), *TIMERS])
    assert result.exit_code == 1
    assert "at least 100 are needed" in " ".join(result.output.split())
    assert not (tmp_path / "predictor.json").exists()


def test_train_refuses_a_missing_data_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(predictor_app, ["train", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "no callstream data" in result.output
    assert not (tmp_path / "none").exists()


def test_evaluate_prints_json(shipped: TrainedPredictor) -> None:
    result = CliRunner().invoke(
        predictor_app,
        ["evaluate", "--calls", "40", "--seed", "404", "--complete-after", "60", "--json"],
    )
    assert result.exit_code == 0, result.output
    report = msgspec.json.decode(result.stdout)
    assert report["scenario"]["compress"] == 30
    assert set(report["figures"]) == {"trained", "heuristic"}
    assert report["figures"]["trained"]["calls"] == 40
    precision = report["figures"]["trained"]["precision"]
    assert precision is None or 0.0 <= precision <= 1.0
    assert not math.isnan(report["figures"]["heuristic"]["median_lead"])
