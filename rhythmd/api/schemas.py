"""Pydantic models of the v1 API: request bodies and the documented shape of responses."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from rhythmd.batch import MAX_BRANCH, MAX_STEP, METRIC_NAME_MAX, METRIC_NAME_RE
from rhythmd.core.recommendations import CLIENT_OUTCOMES, TRANSITIONS
from rhythmd.jsonsafe import encode_nonfinite
from rhythmd.recommendations import ACTIONS
from rhythmd.run_status import ENDINGS, SHOWN


def _no_bool(value: Any) -> Any:
    """JSON ``true``/``false`` are not integers (pydantic would read them as 1/0)."""
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


Step = Annotated[int, Field(ge=0, le=MAX_STEP), BeforeValidator(_no_bool)]
"""An optimizer step: an integer in [0, 2**53] (``3.0`` is one, ``true`` is not)."""
BranchNo = Annotated[int, Field(ge=0, le=MAX_BRANCH), BeforeValidator(_no_bool)]
LR = Annotated[float, Field(ge=0, strict=True)]
"""A learning rate: a number >= 0 (never a boolean)."""
Action = Literal[tuple(ACTIONS)]  # type: ignore[valid-type]
"""The actions the daemon knows (``rhythmd.recommendations.ACTIONS``), as an enum."""

NonFiniteString = Literal["NaN", "Infinity", "-Infinity"]
FloatOut = float | NonFiniteString
"""A float in a response: a JSON number, or one of the strings for non-finite values."""


JSONObject = Annotated[dict[str, Any],
                      PlainSerializer(encode_nonfinite, return_type=dict[str, Any],
                                      when_used="json")]
"""A free-form object in a response: its non-finite floats are written "NaN", "Infinity",
"-Infinity" like every other float (pydantic would write them as null inside ``Any``)."""


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$",
                      description="Human-readable run name (not unique).")
    project: str | None = Field(None, min_length=1, max_length=128,
                                pattern=r"^[^\x00-\x1f\x7f/]+$", description="Project name.")
    config: dict[str, Any] | None = Field(
        None, description="Free-form run configuration (optimizer, lr, schedule, total_steps…).")
    tags: dict[str, Any] | None = Field(None, description="Free-form tags.")
    run_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
        description="Optional client-chosen id: creating it again returns the existing run "
                    "(200), so a restarted job re-attaches to its run.")


class Run(BaseModel):
    run_id: str
    name: str
    project: str | None
    config: JSONObject | None
    tags: JSONObject | None
    status: str = Field(description="running, finished, failed or stopped.")
    created_at: float = Field(description="Unix seconds.")
    updated_at: float = Field(description="Unix seconds.")
    last_step: int | None = Field(description="Highest step of the latest branch.")
    n_points: int
    n_batches: int
    branch: int = Field(description="Latest branch (0 until the first rollback).")
    health: str = Field(description="From the open diagnoses: healthy, diverging, stagnating, "
                                    "oscillating or slow.")
    state: str = Field(description="What a person wants to know: healthy, diverging, "
                                   "stagnating, oscillating, slow, stopped, finished or lost.")


class RunList(BaseModel):
    runs: list[Run]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class RunFinish(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal[ENDINGS] = "finished"  # type: ignore[valid-type]
    step: Step | None = None


class SeriesIn(BaseModel):
    """One metric's points as columns: ``steps``, ``values`` and ``wall_times`` (if given)
    must have the same length (422 naming the column otherwise)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="Metric name, e.g. train_loss, val/acc@1.",
                      min_length=1, max_length=METRIC_NAME_MAX, pattern=METRIC_NAME_RE.pattern)
    steps: list[Step] = Field(..., description="Optimizer steps (>= 0), one per value.")
    values: list[float | NonFiniteString | None] = Field(
        ..., description='Values; NaN/Infinity literals, the strings "NaN", "Infinity", '
                         '"-Infinity" and null (NaN) are non-finite data, stored exactly.')
    wall_times: list[float] | None = Field(None, description="Unix seconds, one per value.")


class MetricBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_id: str | None = Field(
        None, description="Idempotency key: a retried batch with the same id is stored once.",
        pattern=r"^[A-Za-z0-9_.:\-]{1,128}$")
    branch: BranchNo | None = Field(0, description="0 (or null) until a rollback; the client "
                                  "increments it when it resumes from a checkpoint.")
    branch_start_step: Step | None = Field(
        None, description="Step a new branch resumed from (default: its first step).")
    series: list[SeriesIn]


class Recommendation(BaseModel):
    id: str
    run_id: str
    action: str = Field(description="reduce_lr, warmup, set_schedule, increase_lr, rollback "
                                    "or stop (docs/recommendations.md).")
    params: JSONObject
    reason: str
    diagnosis_id: str | None
    author: str = Field(description="'rhythmd' for the policy, else who issued it by hand.")
    issued_at_step: int | None
    expires_at_step: int | None
    status: Literal[tuple(TRANSITIONS)]  # type: ignore[valid-type]
    created_at: float
    updated_at: float
    applied_step: int | None
    lr_before: list[FloatOut] | None
    lr_after: list[FloatOut] | None
    note: str | None


class IngestResponse(BaseModel):
    accepted: int = Field(description="Points stored by this batch (or by its first delivery).")
    duplicate: bool = Field(description="True when this batch_id was already stored.")
    batch_id: str
    seq_start: int = Field(description="Arrival sequence number of the batch's first point.")
    branch: int
    recommendations: list[Recommendation] = Field(
        description="The run's pending recommendations, so the client needs no extra request.")
    blowup_bound: float | None = Field(
        None, description="Absolute train loss above which a single step is a blow-up beyond "
        "doubt (about 10x above both the run's starting level and its recent level), for the "
        "client's local reflex; null until the run has a baseline, or for a signed loss.")


class MetricInfo(BaseModel):
    name: str
    points: int
    nonfinite_points: int
    first_step: int | None
    last_step: int | None


class MetricList(BaseModel):
    run_id: str
    metrics: list[MetricInfo]


class SeriesOut(BaseModel):
    run_id: str
    name: str
    branch: int | Literal["latest", "all"]
    total_points: int = Field(description="Points in the selection before downsampling.")
    returned_points: int
    downsampled: bool
    steps: list[int]
    values: list[FloatOut]
    wall_times: list[FloatOut] | None = None
    branches: list[int] | None = Field(None, description="Branch of each point (branch=all).")


class Branch(BaseModel):
    branch: int
    start_step: int | None
    parent_branch: int | None
    created_at: float


class BranchList(BaseModel):
    run_id: str
    branches: list[Branch]


class RecommendationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Action
    params: dict[str, Any] = Field(
        default_factory=dict, description="The action's parameters, each action its own "
        "(docs/recommendations.md); others are refused with 422 naming the parameter.")
    reason: str = Field("issued by hand", max_length=2000)
    author: str = Field("user", min_length=1, max_length=128)
    expires_at_step: Step | None = None


class RecommendationList(BaseModel):
    run_id: str
    recommendations: list[Recommendation]


class RecommendationAck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal[CLIENT_OUTCOMES]  # type: ignore[valid-type]
    step: Step | None = None
    lr_before: list[LR] | None = Field(None, max_length=4096,
                                          description="LR per param group before.")
    lr_after: list[LR] | None = Field(None, max_length=4096,
                                         description="LR per param group after.")
    note: str | None = Field(None, max_length=2000)


class Event(BaseModel):
    event_id: int
    kind: str
    step: int | None
    wall_time: float
    ref_id: str | None
    payload: JSONObject


class EventList(BaseModel):
    run_id: str
    events: list[Event]


class Health(BaseModel):
    status: Literal["ok", "unavailable", "starting"]
    database: str
    schema_version: int | None
    version: str


class ErrorOut(BaseModel):
    detail: str | list[dict[str, Any]]


class Diagnosis(BaseModel):
    id: str = Field(description="Stable id, e.g. divergence-1.")
    kind: str = Field(description="divergence, stagnation, oscillation, slow_progress or spike.")
    metric: str
    detected_at_step: int = Field(description="Step at which it was first flagged.")
    onset_step: int = Field(description="Step where the condition is estimated to begin.")
    severity: str
    confidence: float
    evidence: JSONObject
    message: str
    status: Literal["open", "closed"]
    updated_at_step: int | None = None
    closed_at_step: int | None = None


class DiagnosisList(BaseModel):
    run_id: str
    diagnoses: list[Diagnosis]


class ScheduleSegment(BaseModel):
    kind: str = Field(description="constant, warmup, step, linear_decay, exponential, cosine, "
                                  "one_cycle, increase or unknown.")
    start_step: int
    end_step: int
    lr_start: FloatOut
    lr_end: FloatOut
    params: JSONObject


class ScheduleOut(BaseModel):
    run_id: str
    segments: list[ScheduleSegment]


class MetricSummary(BaseModel):
    last: FloatOut | None
    last_step: int | None
    best: FloatOut | None = Field(description="Finite min (max for accuracy-like names).")
    best_step: int | None
    points: int
    nonfinite_points: int


class RunSummary(BaseModel):
    run_id: str
    name: str
    project: str | None
    status: Literal[SHOWN]  # type: ignore[valid-type]
    run_status: str = Field(description="Lifecycle: running, finished, failed or stopped.")
    health: str
    last_step: int | None
    current_lr: FloatOut | None = Field(description="Last reported `lr` (absolute).")
    updated_at: float
    branch: int
    metrics: dict[str, MetricSummary]
    counts: JSONObject
    open_diagnoses: list[JSONObject]


class TimelineItem(BaseModel):
    kind: str = Field(description="diagnosis_opened|_updated|_closed, recommendation_issued|"
                                  "_applied|_rejected|_expired, rollback, schedule_segment, "
                                  "run_finished, run_resumed, run_lost.")
    step: int | None
    wall_time: float | None = Field(description="Unix seconds (none for schedule segments).")
    ref_id: str | None
    title: str = Field(description="One line for people.")
    detail: JSONObject
    links: dict[str, str] = Field(description="API paths of the evidence.")


class Timeline(BaseModel):
    run_id: str
    items: list[TimelineItem]
