"""Results: the schema of a run, its store on disk, and what is computed from stored runs
(comparisons, fleet summaries). Never imports an engine or the report."""

from visionbench.results.kinds import KINDS, Results, json_schema
from visionbench.results.schema import (
    SCHEMA_VERSION,
    Accuracy,
    CellKey,
    Fidelity,
    InstanceResult,
    Measurement,
    MlperfResult,
    ModelInfo,
    OutputFidelity,
    RunSettings,
    SystemFacts,
    TuneOutcome,
    now,
)
from visionbench.results.store import (
    RAW_DIR,
    RESULTS_CSV,
    RESULTS_JSON,
    RunStore,
    load,
    load_raw,
    read_json,
)

__all__ = [
    "KINDS",
    "RAW_DIR",
    "RESULTS_CSV",
    "RESULTS_JSON",
    "SCHEMA_VERSION",
    "Accuracy",
    "CellKey",
    "Fidelity",
    "InstanceResult",
    "Measurement",
    "MlperfResult",
    "ModelInfo",
    "OutputFidelity",
    "Results",
    "RunSettings",
    "RunStore",
    "SystemFacts",
    "TuneOutcome",
    "json_schema",
    "load",
    "load_raw",
    "now",
    "read_json",
]
