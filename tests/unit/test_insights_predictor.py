"""The completion predictor's features and the default heuristic."""

from __future__ import annotations

import math

import msgspec
import pytest

from callstream.insights.call import CallInsights
from callstream.insights.predictor_api import (
    FEATURE_NAMES,
    HeuristicPredictor,
    PredictorFeatures,
    features_from_state,
)
from callstream.insights.step import EngineConfig
from tests.unit.test_insights_builders import ACCOUNT, T0, CallBuilder, call_sid, client_call

BASE = PredictorFeatures(
    call_type="client",
    gateway_edges=1,
    gateway_edges_ended=1,
    sdk_present=True,
    sdk_disconnected=True,
    answered=True,
    since_end=0.1,
    since_last_arrival=0.1,
    records=120,
    sdk_sample_coverage=1.0,
    gateway_metric_coverage=1.0,
    open_sdk_windows=0,
    idle_ended=False,
)


def test_vector_follows_the_documented_order() -> None:
    vector = BASE.as_vector()
    assert len(vector) == len(FEATURE_NAMES)
    named = dict(zip(FEATURE_NAMES, vector, strict=True))
    assert named["call_type_client"] == 1.0 and named["call_type_carrier"] == 0.0
    assert named["gateway_edges_ended_fraction"] == 1.0
    assert named["since_last_arrival"] == 0.1
    assert named["log_records"] == pytest.approx(math.log1p(120))
    assert all(isinstance(v, float) for v in vector)


def test_features_of_a_finished_client_call() -> None:
    logic = CallInsights(EngineConfig(partial_after=10, complete_after=600))
    state = logic.new_state(ACCOUNT, call_sid())
    logic.apply(state, client_call(CallBuilder(), talk=30), T0 + 40)
    features = features_from_state(state, T0 + 100, 600)
    assert features.call_type == "client"
    assert (features.gateway_edges, features.gateway_edges_ended) == (1, 1)
    assert features.sdk_present and features.sdk_disconnected and features.answered
    assert features.since_end == pytest.approx(60 / 600)
    assert features.since_last_arrival == pytest.approx(60 / 600)
    # 30 samples over 31 connected seconds; 6 metric records of 2 x ceil(31/10) expected.
    assert features.sdk_sample_coverage == pytest.approx(30 / 31)
    assert features.gateway_metric_coverage == pytest.approx(6 / 8)
    assert features.open_sdk_windows == 0 and not features.idle_ended


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, True),
        ({"since_last_arrival": 0.01}, False),  # still receiving
        ({"gateway_edges_ended": 0}, False),
        ({"sdk_disconnected": False}, False),
        ({"sdk_sample_coverage": 0.5}, False),
        ({"open_sdk_windows": 1}, False),
        ({"sdk_disconnected": False, "since_last_arrival": 0.25}, True),  # quiet long enough
    ],
)
def test_heuristic(change: dict[str, object], expected: bool) -> None:
    features = msgspec.structs.replace(BASE, **change)
    assert HeuristicPredictor().predict(features) is expected
