"""The call-traffic simulator: reproducible, complete, consistent, realistically late."""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from random import Random

import pytest
import typer
from typer.testing import CliRunner

from callstream.model.mos import calculate_mos, round_mos
from callstream.model.telemetry import (
    GatewayEvent,
    GatewayMetric,
    SdkEvent,
    SdkSample,
    TelemetryRecord,
    decode_ndjson,
    encode_ndjson,
)
from callstream.sim import (
    DEFAULT_DELIVERY,
    CallPlan,
    DelayComponent,
    SimConfig,
    Simulation,
    SourceDelivery,
    TrafficMix,
    write_ndjson,
)
from callstream.sim.cli import simulate

POOR = ("congested_wifi", "lossy_mobile")


@dataclass
class Run:
    config: SimConfig
    plans: dict[str, CallPlan]
    arrivals: list[tuple[float, TelemetryRecord]]
    simulation: Simulation

    @property
    def records(self) -> list[TelemetryRecord]:
        return [record for _, record in self.arrivals]

    def of(self, kind: type[TelemetryRecord]) -> list[TelemetryRecord]:
        return [r for r in self.records if isinstance(r, kind)]

    def by_call(self, kind: type[TelemetryRecord]) -> dict[str, list[TelemetryRecord]]:
        calls: dict[str, list[TelemetryRecord]] = defaultdict(list)
        for record in self.of(kind):
            calls[record.call_sid].append(record)
        return calls


def run(config: SimConfig) -> Run:
    simulation = Simulation(config)
    plans = {plan.call_sid: plan for plan in simulation.plans()}
    return Run(config, plans, list(simulation), simulation)


@pytest.fixture(scope="module")
def mix() -> Run:
    """A default mix of a few hundred calls."""
    return run(SimConfig(calls=400, concurrency=25, seed=7))


def samples(records: Iterable[TelemetryRecord]) -> list[SdkSample]:
    return sorted((r for r in records if isinstance(r, SdkSample)), key=lambda s: s.timestamp)


# --- reproducibility ---


def test_the_same_seed_gives_byte_identical_output() -> None:
    config = SimConfig(calls=40, concurrency=8, seed=11)
    first = encode_ndjson([r for _, r in Simulation(config)])
    second = encode_ndjson([r for _, r in Simulation(config)])
    assert first == second
    other = encode_ndjson([r for _, r in Simulation(replace(config, seed=12))])
    assert other != first


def test_iterating_again_replays_the_same_traffic_and_resets_the_stats() -> None:
    simulation = Simulation(SimConfig(calls=20, concurrency=5, seed=3))
    first = list(simulation)
    stats = replace(simulation.stats)
    assert list(simulation) == first
    assert simulation.stats == stats


# --- the mix ---


def test_every_call_type_outcome_and_profile_occurs(mix: Run) -> None:
    plans = mix.plans.values()
    assert {p.call_type for p in plans} == {"carrier", "sip", "trunking", "client"}
    assert {p.outcome for p in plans} == {"completed", "busy", "no-answer", "failed", "canceled"}
    assert {p.profile for p in plans if p.has_media} == {
        "good",
        "congested_wifi",
        "lossy_mobile",
        "one_way_audio",
    }
    assert any(p.profile == "ice_failure" for p in plans)


def test_each_call_type_is_seen_by_its_edges(mix: Run) -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for record in mix.records:
        if isinstance(record, GatewayEvent | GatewayMetric):
            edges[record.call_sid].add(record.edge)
    sdk_calls = {r.call_sid for r in mix.records if isinstance(r, SdkEvent | SdkSample)}
    expected = {
        "carrier": {"carrier_edge"},
        "sip": {"sip_edge"},
        "trunking": {"sip_edge", "carrier_edge"},
        "client": {"client_edge"},
    }
    for sid, plan in mix.plans.items():
        # A lost delivery can hide an edge's events, never add a wrong one.
        assert edges[sid] <= expected[plan.call_type]
        assert (sid in sdk_calls) <= (plan.call_type == "client")
    by_type = Counter(mix.plans[sid].call_type for sid in sdk_calls)
    assert set(by_type) == {"client"}
    assert sum(edges[s] == expected[p.call_type] for s, p in mix.plans.items()) > 0.95 * len(
        mix.plans
    )


def test_concurrency_is_about_what_was_asked(mix: Run) -> None:
    plans = list(mix.plans.values())
    last_start = max(p.created for p in plans)
    # Sample the second half of the run, once the first calls have run their course.
    moments = [last_start * (0.5 + 0.5 * n / 50) for n in range(50)]
    active = [sum(p.created <= t < p.ended for p in plans) for t in moments]
    average = sum(active) / len(active)
    assert 0.6 * mix.config.concurrency <= average <= 1.4 * mix.config.concurrency


def test_call_durations_are_heavy_tailed(mix: Run) -> None:
    talk = sorted(p.ended - p.answered for p in mix.plans.values() if p.answered is not None)
    median = talk[len(talk) // 2]
    assert 60 <= median <= 240
    assert talk[0] < 20  # short calls
    assert talk[-1] > 5 * median


# --- validity ---


def test_every_record_decodes_and_ids_are_unique(mix: Run) -> None:
    records = mix.records
    assert decode_ndjson(encode_ndjson(records)) == records
    assert len({r.id for r in records}) == len(records)
    assert {type(r) for r in records} == {GatewayEvent, GatewayMetric, SdkEvent, SdkSample}


def test_arrivals_are_ordered_and_never_precede_the_record(mix: Run) -> None:
    offsets = [offset for offset, _ in mix.arrivals]
    assert offsets == sorted(offsets)
    start = mix.config.start
    assert all(start + timedelta(seconds=o) >= r.timestamp for o, r in mix.arrivals)
    # ... yet the stream is out of timestamp order, as real deliveries are.
    stamps = [r.timestamp for r in mix.records]
    assert stamps != sorted(stamps)


def test_some_records_arrive_minutes_late_and_some_never(mix: Run) -> None:
    late = Counter[str]()
    for offset, record in mix.arrivals:
        if offset - mix.plans[record.call_sid].ended > 60:
            late[type(record).__name__] += 1
    assert late["SdkSample"] > 0 and late["SdkEvent"] > 0
    total = len(mix.records)
    prompt = sum(
        1
        for offset, record in mix.arrivals
        if (mix.config.start + timedelta(seconds=offset) - record.timestamp).total_seconds() < 10
    )
    assert prompt > 0.8 * total  # most arrive within seconds
    stats = mix.simulation.stats
    assert stats.records_dropped > 0
    assert stats.records_delivered == total
    assert stats.records_dropped < 0.05 * total
    assert stats.calls_started == stats.calls_done == len(mix.plans)


def test_compression_divides_arrival_offsets_only() -> None:
    config = SimConfig(calls=15, concurrency=4, seed=5)
    plain = list(Simulation(config))
    fast = list(Simulation(replace(config, compress=10)))
    assert [r for _, r in fast] == [r for _, r in plain]
    assert [o for o, _ in fast] == pytest.approx([o / 10 for o, _ in plain])


# --- gateway events ---


def test_gateway_progress_tells_the_outcome(mix: Run) -> None:
    states = {
        "completed": "completed",
        "busy": "busy",
        "no-answer": "noanswer",
        "failed": "fail",
        "canceled": "canceled",
    }
    finals = [
        e for e in mix.of(GatewayEvent) if isinstance(e, GatewayEvent) and e.name == "completed"
    ]
    assert len(finals) > 0.9 * sum(len(p.edges) for p in mix.plans.values())
    for event in finals:
        plan = mix.plans[event.call_sid]
        assert event.call_state == states[plan.outcome]
        assert event.call_type == plan.call_type and event.direction == plan.direction
        assert event.end_time is not None and event.sip_response_code is not None
        assert event.from_ is not None and event.to is not None
    answered = [
        e for e in mix.of(GatewayEvent) if isinstance(e, GatewayEvent) and e.name == "answered"
    ]
    assert all(mix.plans[e.call_sid].outcome == "completed" for e in answered)


# --- SDK samples ---


def test_sdk_samples_are_internally_consistent(mix: Run) -> None:
    checked = 0
    for sid, records in mix.by_call(SdkSample).items():
        plan = mix.plans[sid]
        assert plan.answered is not None
        series = samples(records)
        first_at = mix.config.start + timedelta(seconds=plan.answered + 1)
        for previous, sample in zip([None, *series], series, strict=False):
            counted = sample.packets_received + sample.packets_lost
            expected = round(sample.packets_lost / counted * 100, 2) if counted else 0.0
            assert sample.packets_lost_fraction == expected
            if abs(sample.timestamp - first_at) < timedelta(milliseconds=2):
                assert sample.mos is None  # the first sample of a call
                assert sample.total_packets_received == sample.packets_received
                assert sample.total_bytes_sent == sample.bytes_sent
                continue
            assert sample.mos == round_mos(
                calculate_mos(sample.rtt, sample.jitter, sample.packets_lost_fraction)
            )
            if previous is None or sample.timestamp - previous.timestamp > timedelta(seconds=1.01):
                continue  # a lost batch in between
            checked += 1
            assert sample.total_packets_received == (
                previous.total_packets_received + sample.packets_received
            )
            assert sample.total_packets_lost == previous.total_packets_lost + sample.packets_lost
            assert (
                sample.total_bytes_received == previous.total_bytes_received + sample.bytes_received
            )
            assert sample.total_bytes_sent == previous.total_bytes_sent + sample.bytes_sent
            assert sample.total_packets_sent == previous.total_packets_sent + (
                sample.packets_sent or 0
            )
    assert checked > 1000


def _crossings(series: Iterable[SdkSample]) -> set[str]:
    crossed = set()
    for s in series:
        if s.rtt is not None and s.rtt > 400:
            crossed.add("rtt")
        if s.jitter > 30:
            crossed.add("jitter")
        if s.packets_lost_fraction > 1:
            crossed.add("loss")
        if s.mos is not None and s.mos < 3:
            crossed.add("mos")
    return crossed


def test_poor_networks_cross_the_warning_thresholds_and_good_ones_do_not(mix: Run) -> None:
    by_profile: dict[str, list[SdkSample]] = defaultdict(list)
    per_call: dict[str, set[str]] = {}
    for sid, records in mix.by_call(SdkSample).items():
        series = samples(records)
        by_profile[mix.plans[sid].profile] += series
        per_call[sid] = _crossings(series)
    assert _crossings(by_profile["good"]) == set()
    for profile in POOR:
        assert _crossings(by_profile[profile]) == {"rtt", "jitter", "loss", "mos"}
    poor_calls = [sid for sid in per_call if mix.plans[sid].profile in POOR]
    # Severity varies: some poor calls cross thresholds, not necessarily all of them.
    assert any(per_call[sid] for sid in poor_calls)
    assert any(len(per_call[sid]) < 4 for sid in poor_calls)


def test_gateway_metrics_cross_tag_thresholds_only_on_poor_networks(mix: Run) -> None:
    def tagged(metric: GatewayMetric) -> set[str]:
        tags = set()
        if metric.jitter and metric.jitter.avg >= 5 and metric.jitter.max >= 30:
            tags.add("high_jitter")
        expected = (metric.packets_received or 0) + metric.packets_lost
        if expected and metric.packets_lost / expected > 0.05:
            tags.add("high_packet_loss")
        if metric.latency and metric.latency.avg > 150:
            tags.add("high_latency")
        return tags

    by_profile: dict[str, set[str]] = defaultdict(set)
    for metric in mix.of(GatewayMetric):
        assert isinstance(metric, GatewayMetric)
        if metric.direction == "inbound":
            by_profile[mix.plans[metric.call_sid].profile] |= tagged(metric)
    assert by_profile["good"] == set()
    assert by_profile["congested_wifi"] | by_profile["lossy_mobile"] == {
        "high_jitter",
        "high_packet_loss",
        "high_latency",
    }


def test_one_way_audio_silences_one_direction(mix: Run) -> None:
    seen = 0
    for sid, records in mix.by_call(SdkSample).items():
        if mix.plans[sid].profile != "one_way_audio":
            continue
        series = samples(records)
        seen += 1
        dead_in = all(s.bytes_received == 0 and s.packets_received == 0 for s in series)
        dead_out = all(s.bytes_sent == 0 and s.total_packets_sent == 0 for s in series)
        assert dead_in != dead_out
        levels = (
            {s.audio_level_out for s in series} if dead_in else {s.audio_level_in for s in series}
        )
        assert levels == {0}
    assert seen > 0
    silent_inbound = [
        m
        for m in mix.of(GatewayMetric)
        if isinstance(m, GatewayMetric)
        and m.direction == "inbound"
        and mix.plans[m.call_sid].profile == "one_way_audio"
        and m.packets_received == 0
    ]
    assert silent_inbound  # what the gateway's silence tag is for


# --- SDK events ---


def sdk_events(run: Run) -> dict[str, list[SdkEvent]]:
    """Each call's SDK events in timestamp order."""
    return {
        sid: sorted((r for r in records if isinstance(r, SdkEvent)), key=lambda e: e.timestamp)
        for sid, records in run.by_call(SdkEvent).items()
    }


def test_ice_failures_have_no_media_and_say_why(mix: Run) -> None:
    failed = [sid for sid, p in mix.plans.items() if p.profile == "ice_failure"]
    assert failed
    sample_calls = set(mix.by_call(SdkSample))
    by_call = sdk_events(mix)
    for sid in failed:
        assert sid not in sample_calls
        names = {(e.group, e.name, e.level) for e in by_call.get(sid, [])}
        # Lost deliveries may hide one of them, rarely both.
        assert names & {
            ("ice-connection-state", "failed", "ERROR"),
            ("connection", "error", "ERROR"),
        }


def test_client_calls_tell_their_lifecycle(mix: Run) -> None:
    seen: Counter[tuple[str, str]] = Counter()
    by_call = sdk_events(mix)
    for sid, plan in mix.plans.items():
        if plan.call_type != "client":
            continue
        for event in by_call.get(sid, []):
            seen[(event.group, event.name)] += 1
            assert event.level == event.level.upper()
            assert event.direction == plan.sdk_direction
    for expected in [
        ("connection", "incoming"),
        ("connection", "outgoing"),
        ("connection", "accepted-by-local"),
        ("connection", "accepted-by-remote"),
        ("connection", "disconnected-by-local"),
        ("connection", "disconnected-by-remote"),
        ("connection", "error"),
        ("settings", "init"),
        ("settings", "codec"),
        ("ice-candidate", "ice-candidate"),
        ("ice-candidate", "selected-ice-candidate-pair"),
        ("ice-connection-state", "connected"),
        ("pc-connection-state", "connected"),
        ("signaling-state", "stable"),
        ("network-information", "network-change"),
        ("feedback", "received"),
    ]:
        assert seen[expected] > 0, expected


def test_feedback_scores_are_in_range(mix: Run) -> None:
    feedback = [
        e
        for e in mix.of(SdkEvent)
        if isinstance(e, SdkEvent) and e.group == "feedback" and e.name == "received"
    ]
    assert feedback
    for event in feedback:
        assert event.payload is not None and 1 <= event.payload["quality_score"] <= 5
    assert any(e.payload and "issue_name" in e.payload for e in feedback)


def test_only_some_sdks_publish_their_own_warnings(mix: Run) -> None:
    warned = {
        e.call_sid
        for e in mix.of(SdkEvent)
        if isinstance(e, SdkEvent) and e.group == "network-quality-warning-raised"
    }
    crossing = {
        sid
        for sid, records in mix.by_call(SdkSample).items()
        if len(_crossings(samples(records))) == 4
    }
    assert warned & crossing
    assert crossing - warned  # the engine has to raise these itself
    for sid in warned:
        assert mix.plans[sid].profile != "good"


# --- delivery model ---


def test_delays_are_never_negative_and_are_capped() -> None:
    rng = Random(1)
    model = DEFAULT_DELIVERY
    for source in (model.gateway_event, model.gateway_metric, model.sdk_event, model.sdk_sample):
        for n in range(2000):
            sent = float(n)
            arrival = model.arrival(source, rng, sent, sent + 30, poor=n % 2 == 0)
            if arrival is not None:
                assert sent <= arrival <= sent + model.max_delay


def test_drop_rate_follows_the_model_and_poor_networks_lose_more() -> None:
    model = replace(
        DEFAULT_DELIVERY,
        sdk_sample=SourceDelivery(drop=0.05, components=(DelayComponent(1.0, 1.0, 0.5),)),
    )
    rng = Random(2)
    good = sum(model.arrival(model.sdk_sample, rng, 0, 0, poor=False) is None for _ in range(20000))
    poor = sum(model.arrival(model.sdk_sample, rng, 0, 0, poor=True) is None for _ in range(20000))
    assert 800 < good < 1200
    assert 1700 < poor < 2300


def test_component_shares_must_add_up() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        SourceDelivery(drop=0, components=(DelayComponent(0.5, 1.0, 0.5),))


@pytest.mark.parametrize(
    "bad", [{"calls": -1}, {"concurrency": 0}, {"compress": 0}, {"compress": float("inf")}]
)
def test_bad_configs_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SimConfig(**bad)  # type: ignore[arg-type]


# --- scale (correctness only: speed is measured by bench/bench_sim.py) ---


def test_a_large_concurrency_run_is_complete_and_ordered() -> None:
    mix = TrafficMix(call_types=(("client", 0.5), ("carrier", 0.5)))
    simulation = Simulation(SimConfig(calls=450, concurrency=150, seed=4, mix=mix))
    plans = list(simulation.plans())
    peak = max(
        sum(p.created <= t < p.ended for p in plans) for t in (p.created for p in plans[::20])
    )
    assert peak >= 0.75 * 150
    last = 0.0
    calls = set()
    for offset, record in simulation:
        assert offset >= last
        last = offset
        calls.add(record.call_sid)
    assert len(calls) >= 0.99 * len(plans)
    assert simulation.stats.calls_done == 450


# --- output ---


def test_realtime_writing_waits_for_each_arrival_without_really_sleeping() -> None:
    now = [100.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    config = SimConfig(calls=5, concurrency=2, seed=9, compress=50)
    arrivals = list(Simulation(config))
    out = io.BytesIO()
    written = write_ndjson(iter(arrivals), out, realtime=True, clock=lambda: now[0], sleep=sleep)
    assert written == len(arrivals)
    assert all(w > 0 for w in waits)
    assert now[0] - 100.0 == pytest.approx(arrivals[-1][0])
    assert decode_ndjson(out.getvalue()) == [r for _, r in arrivals]


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(simulate)
    return app


def test_the_cli_writes_ndjson_that_decodes(tmp_path: Path) -> None:
    target = tmp_path / "traffic.ndjson"
    runner = CliRunner()
    result = runner.invoke(
        cli(), ["--calls", "12", "--concurrency", "4", "--seed", "2", "--output", str(target)]
    )
    assert result.exit_code == 0, result.output
    from_file = decode_ndjson(target.read_bytes())
    expected = [r for _, r in Simulation(SimConfig(calls=12, concurrency=4, seed=2))]
    assert from_file == expected
    to_stdout = runner.invoke(cli(), ["--calls", "12", "--concurrency", "4", "--seed", "2"])
    assert to_stdout.exit_code == 0
    assert decode_ndjson(to_stdout.stdout_bytes) == expected


def test_the_cli_refuses_bad_options() -> None:
    runner = CliRunner()
    assert runner.invoke(cli(), ["--compress", "0"]).exit_code == 2
    assert runner.invoke(cli(), ["--start", "yesterday"]).exit_code == 2


def test_the_cli_start_option_moves_timestamps(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["--calls", "3", "--concurrency", "2", "--start", "2030-06-01T00:00:00Z"]
    result = runner.invoke(cli(), args)
    assert result.exit_code == 0, result.output
    records = decode_ndjson(result.stdout_bytes)
    assert records and all(r.timestamp.year == 2030 for r in records)
