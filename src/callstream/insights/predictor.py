"""The trained completion predictor: gradient-boosted trees, shipped and loaded as JSON.

``TrainedPredictor`` implements ``CompletionPredictor`` by walking the exported trees in
plain Python, so the engine needs no scikit-learn at run time and loading a model file runs
no code (unlike a pickle) and does not depend on the scikit-learn version that trained it.
The packaged model is ``predictor_model.json`` beside this module; ``load_predictor`` prefers
a data directory's own ``predictor.json`` (written by ``callstream predictor train``).

Training (scikit-learn, imported only inside the training functions) learns, from the
labelled checkpoints a replay records (``insights/replay.py``), the probability that the
summary content at a checkpoint is already the final one. The decision threshold is then
chosen on validation calls for the *first* yes of each call, because only that one is
emitted: the lowest threshold whose first-yes precision stays at or above the target.
docs/predictor.md explains the choices and the figures.
"""

from __future__ import annotations

import importlib.resources
import math
import statistics
import zlib
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from callstream.insights.predictor_api import FEATURE_NAMES, PredictorFeatures
from callstream.insights.replay import CallRecord, Scenario, collect_checkpoints, simulated_arrivals
from callstream.store.interfaces import CallKey

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "DATA_DIR_MODEL",
    "MIN_CALLS",
    "MODEL_FORMAT",
    "SHIPPED_TRAINING",
    "SHIPPED_VALIDATION",
    "TARGET_PRECISION",
    "BoostingParams",
    "CallRows",
    "Labelled",
    "ModelFile",
    "PredictorError",
    "Progress",
    "Threshold",
    "TrainedPredictor",
    "TrainingData",
    "Tree",
    "ValidationFigures",
    "call_rows",
    "choose_threshold",
    "export_trees",
    "fit_trees",
    "load_predictor",
    "simulated_labelled",
    "split_calls",
    "split_labelled",
    "train_model",
    "write_model",
]

MODEL_FORMAT: Final = "callstream-predictor/1"
DATA_DIR_MODEL: Final = "predictor.json"
"""The file name ``callstream predictor train`` writes into a data directory."""
PACKAGED_MODEL: Final = "predictor_model.json"
TARGET_PRECISION: Final = 0.995
"""First-yes precision the threshold must keep on validation calls."""
MIN_CALLS: Final = 100
"""Completed calls needed to train at all (a fifth of them validate)."""
MIN_SUPPORT: Final = 0.1
"""A threshold is judged only where it predicts at least this share of validation calls:
above that, a single early mistake among a handful of predictions says nothing."""
EARLY_CHECKPOINTS: Final = 20
THIN_EVERY: Final = 4
"""Checkpoints past the first ``EARLY_CHECKPOINTS`` of a call are kept one in
``THIN_EVERY`` (weighted up to match): late ones are nearly all final and cheap to learn,
the early ones decide when predictions are made."""

SHIPPED_TRAINING: Final = (
    Scenario(calls=2000, seed=101),
    Scenario(calls=2000, seed=102),
    Scenario(calls=1500, seed=103, complete_after=60.0, compress=30.0),
)
SHIPPED_VALIDATION: Final = (
    Scenario(calls=1500, seed=201),
    Scenario(calls=800, seed=202, complete_after=60.0, compress=30.0),
)
"""The simulated workloads the packaged model was trained and validated on. Evaluation
uses other seeds (300 and up; the unit tests 400 and up)."""


class PredictorError(ValueError):
    """A model file cannot be used, or there is not enough data to train one."""


# --- the model file -------------------------------------------------------------------------


class Tree(msgspec.Struct, frozen=True, kw_only=True):
    """One regression tree as parallel node arrays; ``feature`` is -1 at a leaf.

    A vector goes left when ``x[feature] <= threshold``, comparing x as a float32, as
    scikit-learn's trees do.
    """

    feature: list[int]
    threshold: list[float]
    left: list[int]
    right: list[int]
    value: list[float]


class TrainingData(msgspec.Struct, frozen=True, kw_only=True):
    source: Literal["simulation", "data-dir"]
    scenarios: list[dict[str, float | int]] = []
    """Simulated workloads (seed, calls, complete_after, compress, concurrency)."""
    data_dir: str | None = None
    complete_after: list[float] = []
    calls: int
    checkpoints: int
    final_share: float
    """Share of (unthinned) training checkpoints already final."""


class ValidationFigures(msgspec.Struct, frozen=True, kw_only=True):
    """First-yes figures on the validation calls at the chosen threshold."""

    scenarios: list[dict[str, float | int]] = []
    calls: int
    predicted: int
    correct: int
    precision: float
    coverage: float
    median_since_end: float
    """Median time of the first yes after the end was known, / complete_after."""
    target_precision: float


class BoostingParams(msgspec.Struct, frozen=True, kw_only=True):
    n_estimators: int = 150
    max_depth: int = 3
    learning_rate: float = 0.1
    min_samples_leaf: int = 20
    subsample: float = 0.8
    random_state: int = 0


class ModelFile(msgspec.Struct, frozen=True, kw_only=True):
    format: str
    model: Literal["gradient-boosted-trees"] = "gradient-boosted-trees"
    feature_names: list[str]
    threshold: float
    """Predict complete when the probability is at least this."""
    training: TrainingData
    validation: ValidationFigures
    params: BoostingParams
    sklearn_version: str
    learning_rate: float
    base_score: float
    """Raw score (log-odds) before any tree."""
    trees: list[Tree]


_decoder: Final = msgspec.json.Decoder(ModelFile)


# --- inference ------------------------------------------------------------------------------


_CompiledTree = tuple[
    tuple[int, ...], tuple[float, ...], tuple[int, ...], tuple[int, ...], tuple[float, ...]
]


class TrainedPredictor:
    """A ``CompletionPredictor`` backed by a model file."""

    __slots__ = ("_base", "_trees", "_width", "model")

    def __init__(self, model: ModelFile) -> None:
        _check(model)
        self.model = model
        self._width = len(model.feature_names)
        self._base = model.base_score
        rate = model.learning_rate
        self._trees: tuple[_CompiledTree, ...] = tuple(
            (
                tuple(t.feature),
                tuple(t.threshold),
                tuple(t.left),
                tuple(t.right),
                tuple(rate * v for v in t.value),
            )
            for t in model.trees
        )

    @classmethod
    def load(cls, path: Path | str | None = None) -> TrainedPredictor:
        """The model in ``path``, or the one shipped in the package."""
        if path is None:
            package = importlib.resources.files("callstream.insights")
            raw = package.joinpath(PACKAGED_MODEL).read_bytes()
            where = f"packaged {PACKAGED_MODEL}"
        else:
            try:
                raw = Path(path).read_bytes()
            except OSError as exc:
                raise PredictorError(f"cannot read the model {path}: {exc}") from exc
            where = str(path)
        return cls.from_json(raw, where)

    @classmethod
    def from_json(cls, raw: bytes, where: str = "model") -> TrainedPredictor:
        try:
            model = _decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise PredictorError(f"{where} is not a predictor model: {exc}") from exc
        try:
            return cls(model)
        except PredictorError as exc:
            raise PredictorError(f"{where}: {exc}") from exc

    @property
    def threshold(self) -> float:
        return self.model.threshold

    def raw_score(self, vector: Sequence[float]) -> float:
        """Log-odds that the summary is final, for a vector in ``FEATURE_NAMES`` order."""
        x = array("f", vector[: self._width])
        total = self._base
        for feature, threshold, left, right, value in self._trees:
            node = 0
            while (f := feature[node]) >= 0:
                node = left[node] if x[f] <= threshold[node] else right[node]
            total += value[node]
        return total

    def probability(self, features: PredictorFeatures) -> float:
        return _expit(self.raw_score(features.as_vector()))

    def predict(self, features: PredictorFeatures) -> bool:
        # Compared as a probability, exactly as the threshold was chosen.
        return self.probability(features) >= self.model.threshold


def load_predictor(data_dir: Path | None = None) -> TrainedPredictor:
    """The data directory's own model (``predictor.json``) if it has one, else the packaged
    model."""
    if data_dir is not None:
        own = data_dir / DATA_DIR_MODEL
        if own.is_file():
            return TrainedPredictor.load(own)
    return TrainedPredictor.load()


def _check(model: ModelFile) -> None:
    """Refuse a file this code would misread, or whose trees would not terminate."""
    if model.format != MODEL_FORMAT:
        raise PredictorError(f"format {model.format!r}, expected {MODEL_FORMAT!r}")
    names = tuple(model.feature_names)
    if not names or names != FEATURE_NAMES[: len(names)]:
        raise PredictorError("its feature names are not a prefix of FEATURE_NAMES")
    if not 0.0 < model.threshold <= 1.0:
        raise PredictorError(f"threshold {model.threshold} is not in (0, 1]")
    for number, tree in enumerate(model.trees):
        _check_tree(tree, len(names), number)


def _check_tree(tree: Tree, width: int, number: int) -> None:
    size = len(tree.feature)
    arrays = (tree.threshold, tree.left, tree.right, tree.value)
    if size == 0 or any(len(a) != size for a in arrays):
        raise PredictorError(f"tree {number} has node arrays of different lengths")
    for node, feature in enumerate(tree.feature):
        if feature < 0:
            continue
        # Children after their parent: every walk moves forward, so it ends.
        if feature >= width or not (
            node < tree.left[node] < size and node < tree.right[node] < size
        ):
            raise PredictorError(f"tree {number} node {node} is malformed")


def _expit(score: float) -> float:
    if score >= 0:
        return 1.0 / (1.0 + math.exp(-score))
    exp = math.exp(score)
    return exp / (1.0 + exp)


# --- data -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallRows:
    """One call's checkpoints as feature vectors and labels, in time order."""

    vectors: list[list[float]]
    labels: list[bool]
    since_end: list[float]


def call_rows(calls: Mapping[CallKey, CallRecord]) -> list[CallRows]:
    """Calls with at least one labelled checkpoint, in a stable order."""
    rows = []
    for key in sorted(calls):
        checkpoints = [c for c in calls[key].checkpoints if c.final is not None]
        if checkpoints:
            rows.append(
                CallRows(
                    vectors=[c.features.as_vector() for c in checkpoints],
                    labels=[bool(c.final) for c in checkpoints],
                    since_end=[c.features.since_end for c in checkpoints],
                )
            )
    return rows


def split_calls(
    calls: Mapping[CallKey, CallRecord], validation_share: float = 0.2
) -> tuple[dict[CallKey, CallRecord], dict[CallKey, CallRecord]]:
    """(training, validation) by a stable hash of the call SID, so reruns agree."""
    buckets = round(validation_share * 100)
    train: dict[CallKey, CallRecord] = {}
    validation: dict[CallKey, CallRecord] = {}
    for key, record in calls.items():
        held_out = zlib.crc32(key[1].encode()) % 100 < buckets
        (validation if held_out else train)[key] = record
    return train, validation


def _matrix(
    calls: Sequence[CallRows],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    import numpy as np

    vectors: list[list[float]] = []
    labels: list[bool] = []
    weights: list[float] = []
    for call in calls:
        for index, (vector, label) in enumerate(zip(call.vectors, call.labels, strict=True)):
            if index >= EARLY_CHECKPOINTS and index % THIN_EVERY:
                continue
            vectors.append(vector)
            labels.append(label)
            weights.append(1.0 if index < EARLY_CHECKPOINTS else float(THIN_EVERY))
    return np.array(vectors), np.array(labels), np.array(weights)


# --- training -------------------------------------------------------------------------------


def fit_trees(
    calls: Sequence[CallRows],
    params: BoostingParams,
    progress: Callable[[int], None] | None = None,
) -> Any:
    """A scikit-learn GradientBoostingClassifier fitted on the calls' checkpoints."""
    from sklearn.ensemble import GradientBoostingClassifier  # type: ignore[import-untyped]

    x, y, weights = _matrix(calls)
    if y.all() or not y.any():
        raise PredictorError(
            "every training checkpoint has the same label; the data shows nothing to learn"
        )
    model = GradientBoostingClassifier(
        n_estimators=params.n_estimators,
        max_depth=params.max_depth,
        learning_rate=params.learning_rate,
        min_samples_leaf=params.min_samples_leaf,
        subsample=params.subsample,
        random_state=params.random_state,
        # No prior model: the raw score is the trees' sum alone, which is all we export.
        init="zero",
    )

    def monitor(stage: int, _model: Any, _locals: Any) -> bool:
        if progress is not None:
            progress(1)
        return False

    model.fit(x, y, sample_weight=weights, monitor=monitor)
    return model


def export_trees(model: Any) -> list[Tree]:
    """The fitted ensemble's trees, from scikit-learn's public ``tree_`` arrays."""
    if model.init != "zero" or model.estimators_.shape[1] != 1:
        raise PredictorError("only binary models fitted with init='zero' can be exported")
    return [_export_tree(estimator.tree_) for estimator in model.estimators_[:, 0]]


def _export_tree(tree: Any) -> Tree:
    # Leaves keep scikit-learn's -1 children; their feature and threshold are placeholders
    # that are normalised so the file does not depend on them.
    leaves = [int(child) < 0 for child in tree.children_left]
    return Tree(
        feature=[-1 if leaf else int(f) for f, leaf in zip(tree.feature, leaves, strict=True)],
        threshold=[
            0.0 if leaf else float(t) for t, leaf in zip(tree.threshold, leaves, strict=True)
        ],
        left=[int(c) for c in tree.children_left],
        right=[int(c) for c in tree.children_right],
        value=[float(v) for v in tree.value[:, 0, 0]],
    )


@dataclass(frozen=True, slots=True)
class Threshold:
    value: float
    predicted: int
    correct: int
    median_since_end: float


def choose_threshold(
    probabilities: Sequence[Sequence[float]],
    calls: Sequence[CallRows],
    target: float = TARGET_PRECISION,
) -> Threshold:
    """The lowest threshold whose first-yes precision on these calls is at least ``target``
    there and at every higher threshold that predicts enough calls to judge.

    A lower threshold makes every call's first yes come earlier or at the same time, so
    the lowest safe one is also the one that predicts soonest and for the most calls.
    """
    events = _first_yes_events(probabilities, calls)
    candidates = sorted({value for value, _, _, _ in events}, reverse=True)
    support = max(1, math.ceil(MIN_SUPPORT * len(calls)))
    best: float | None = None
    for tau, predicted, correct in _sweep(events, candidates):
        if predicted >= support and correct < target * predicted:
            break
        if predicted >= support:
            best = tau
    if best is None:
        raise PredictorError(
            f"no threshold reaches {target:.1%} first-yes precision on the validation calls"
        )
    return _threshold_at(best, probabilities, calls)


# (probability, the call's previous running maximum, label, index in call)
_Event = tuple[float, float, bool, int]


def _first_yes_events(
    probabilities: Sequence[Sequence[float]], calls: Sequence[CallRows]
) -> list[_Event]:
    """The checkpoints that can be a call's first yes: those that beat every earlier one.

    Checkpoint j is the first yes for exactly the thresholds in (previous max, p_j].
    """
    events: list[_Event] = []
    for probs, call in zip(probabilities, calls, strict=True):
        best = -math.inf
        for index, (p, label) in enumerate(zip(probs, call.labels, strict=True)):
            if p > best:
                events.append((p, best, label, index))
                best = p
    return events


def _sweep(events: list[_Event], candidates: list[float]) -> Iterable[tuple[float, int, int]]:
    """(threshold, calls predicted, correct) for each candidate, highest first."""
    starts = sorted(((value, label) for value, _, label, _ in events), reverse=True)
    ends = sorted(((prev, label) for _, prev, label, _ in events), reverse=True)
    predicted = correct = 0
    i = j = 0
    for tau in candidates:
        # An event is active for tau in (prev, value]: it starts once tau <= value and
        # ends once tau <= prev.
        while i < len(starts) and starts[i][0] >= tau:
            predicted += 1
            correct += starts[i][1]
            i += 1
        while j < len(ends) and ends[j][0] >= tau:
            predicted -= 1
            correct -= ends[j][1]
            j += 1
        yield tau, predicted, correct


def _threshold_at(
    tau: float, probabilities: Sequence[Sequence[float]], calls: Sequence[CallRows]
) -> Threshold:
    predicted = correct = 0
    since: list[float] = []
    for probs, call in zip(probabilities, calls, strict=True):
        hit = next((i for i, p in enumerate(probs) if p >= tau), None)
        if hit is not None:
            predicted += 1
            correct += call.labels[hit]
            since.append(call.since_end[hit])
    return Threshold(tau, predicted, correct, statistics.median(since) if since else math.nan)


@dataclass(frozen=True, slots=True)
class Progress:
    """Callbacks for long work: (phase description, total) then advances."""

    start: Callable[[str, float | None], None] = lambda _name, _total: None
    advance: Callable[[int], None] = lambda _n: None


@dataclass(slots=True)
class Labelled:
    train: list[CallRows] = field(default_factory=list)
    validation: list[CallRows] = field(default_factory=list)


def train_model(
    data: Labelled,
    training: TrainingData,
    validation_scenarios: Sequence[Mapping[str, float | int]] = (),
    params: BoostingParams | None = None,
    progress: Progress | None = None,
) -> ModelFile:
    """Fit, export and pick the threshold: a complete model file."""
    import sklearn  # type: ignore[import-untyped]

    params = params or BoostingParams()
    progress = progress or Progress()
    if len(data.train) + len(data.validation) < MIN_CALLS or not data.validation:
        raise PredictorError(
            f"{len(data.train) + len(data.validation)} completed calls to learn from; "
            f"at least {MIN_CALLS} are needed"
        )
    progress.start("fitting trees", params.n_estimators)
    fitted = fit_trees(data.train, params, progress.advance)
    trees = export_trees(fitted)
    draft = ModelFile(
        format=MODEL_FORMAT,
        feature_names=list(FEATURE_NAMES),
        threshold=1.0,
        training=training,
        validation=ValidationFigures(
            calls=0,
            predicted=0,
            correct=0,
            precision=math.nan,
            coverage=math.nan,
            median_since_end=math.nan,
            target_precision=TARGET_PRECISION,
        ),
        params=params,
        sklearn_version=str(sklearn.__version__),
        learning_rate=params.learning_rate,
        base_score=0.0,
        trees=trees,
    )
    scorer = TrainedPredictor(draft)
    probabilities = [
        [_expit(scorer.raw_score(v)) for v in call.vectors] for call in data.validation
    ]
    chosen = choose_threshold(probabilities, data.validation)
    figures = ValidationFigures(
        scenarios=[dict(s) for s in validation_scenarios],
        calls=len(data.validation),
        predicted=chosen.predicted,
        correct=chosen.correct,
        precision=chosen.correct / chosen.predicted,
        coverage=chosen.predicted / len(data.validation),
        median_since_end=chosen.median_since_end,
        target_precision=TARGET_PRECISION,
    )
    return msgspec.structs.replace(draft, threshold=chosen.value, validation=figures)


def write_model(model: ModelFile, path: Path) -> None:
    """Write the model as indented JSON (metadata first), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(msgspec.json.format(msgspec.json.encode(model), indent=1) + b"\n")
    temporary.replace(path)


# --- training data from simulation ----------------------------------------------------------


def simulated_labelled(
    training: Sequence[Scenario] = SHIPPED_TRAINING,
    validation: Sequence[Scenario] = SHIPPED_VALIDATION,
    progress: Progress | None = None,
) -> tuple[Labelled, TrainingData]:
    """Replay the simulated workloads and label their checkpoints."""
    progress = progress or Progress()
    data = Labelled()
    for scenarios, rows in ((training, data.train), (validation, data.validation)):
        for scenario in scenarios:
            progress.start(f"replaying {scenario.calls} calls (seed {scenario.seed})", None)
            calls = collect_checkpoints(
                scenario.engine_config(),
                simulated_arrivals(scenario.sim_config()),
                progress=progress.advance,
            )
            rows.extend(call_rows(calls))
    return data, _describe(
        data.train,
        source="simulation",
        scenarios=[s.describe() for s in training],
        complete_after=sorted({s.complete_after for s in training}),
    )


def _describe(
    rows: Sequence[CallRows],
    *,
    source: Literal["simulation", "data-dir"],
    scenarios: list[dict[str, float | int]] | None = None,
    data_dir: str | None = None,
    complete_after: list[float],
) -> TrainingData:
    labels = [label for call in rows for label in call.labels]
    return TrainingData(
        source=source,
        scenarios=scenarios or [],
        data_dir=data_dir,
        complete_after=complete_after,
        calls=len(rows),
        checkpoints=len(labels),
        final_share=sum(labels) / len(labels) if labels else math.nan,
    )


# --- training data from a data directory ----------------------------------------------------


def split_labelled(
    calls: Mapping[CallKey, CallRecord], *, data_dir: str, complete_after: float
) -> tuple[Labelled, TrainingData]:
    """A data directory's replayed calls as training and validation rows."""
    train, validation = split_calls(calls)
    data = Labelled(call_rows(train), call_rows(validation))
    return data, _describe(
        data.train, source="data-dir", data_dir=data_dir, complete_after=[complete_after]
    )
