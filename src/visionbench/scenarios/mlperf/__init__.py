"""MLPerf Inference scenarios through the real LoadGen: settings, sample library, system under
test, log reading, and the scenario that runs them (``run``)."""

from visionbench.scenarios.mlperf.run import run_mlperf
from visionbench.scenarios.mlperf.settings import SCENARIOS, LoadgenScenario, Options

__all__ = ["SCENARIOS", "LoadgenScenario", "Options", "run_mlperf"]
