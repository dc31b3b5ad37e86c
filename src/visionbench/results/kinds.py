"""The record kinds a run holds, each declared once: its field in results.json, its record type
(which has its ``key`` and ``status``), what it is, and its section in the reports (a title and
the record's fields shown as columns). The store adds any record by its kind,
``Results.records()`` goes over every kind and the reports give every kind its section; a new kind
is one declaration here (its record type beside the others in ``schema``), and the run's model
gains its field. Both the store and the report read this module; no scenario module declares a
kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, create_model

from visionbench.results.schema import (
    Accuracy,
    ColdStartRun,
    LoadPoint,
    Measurement,
    MlperfResult,
    PipelineRun,
    ProfileRun,
    ResultsBase,
    TuneOutcome,
)


@dataclass(frozen=True)
class RecordKind:
    #: The run's field that lists the records, as results.json names it.
    field: str
    #: The record's type: a pydantic model with ``key`` and ``status``.
    model: type[BaseModel]
    description: str
    #: The reports' section for the kind: its title (the description's first words if none) and
    #: the record's fields shown as its columns (key, status and its plain fields if none). The
    #: report may build a richer section of its own for a kind (reporting/sections.py).
    title: str = ""
    columns: tuple[str, ...] = ()


KINDS: tuple[RecordKind, ...] = (
    RecordKind("measurements", Measurement, "each timed measurement: throughput, latency, what ran"),
    RecordKind("accuracy", Accuracy, "top-1/top-5 on labelled images per engine and precision"),
    RecordKind("tune", TuneOutcome, "what visionbench tune found per engine and precision"),
    RecordKind("mlperf", MlperfResult, "each LoadGen run: an engine and precision under one "
                                       "MLPerf scenario"),
    RecordKind("cold", ColdStartRun, "--mode cold: time to the first answer in fresh processes"),
    RecordKind("profiles", ProfileRun, "--mode profile: where each engine and precision's "
                                       "batch-1 time goes, per operation"),
    RecordKind("pipelines", PipelineRun, "--mode pipeline: the whole pipeline (decode, "
                                         "preprocess, queue, batch, feed, inference, "
                                         "post-process) beside inference alone"),
    RecordKind("loadtest", LoadPoint, "visionbench loadtest: each point of a sweep against a "
                                      "served model, as the client saw it"),
)


def _results(kinds: tuple[RecordKind, ...]) -> type[ResultsBase]:
    fields: dict[str, Any] = {k.field: (list[k.model], Field(default_factory=list,  # type: ignore[name-defined]
                                                              description=k.description))
                              for k in kinds}
    model = create_model("Results", __base__=ResultsBase, __module__=__name__, **fields)
    model.kinds = kinds
    return model


#: A run: its system, software, configuration, model(s), invocations and a list per record kind.
Results = _results(KINDS)


def kind_of(record: BaseModel) -> RecordKind:
    for kind in KINDS:
        if isinstance(record, kind.model):
            return kind
    raise TypeError(f"no record kind is declared for {type(record).__name__}")


def json_schema() -> dict[str, Any]:
    return Results.model_json_schema()
