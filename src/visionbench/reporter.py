"""What a run tells its user, as the scenarios call it: the command line implements it (progress
bars, notes), the API and tests may ignore it. A leaf: every layer that reports may import it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from visionbench.harness.timing import Progress, TimingPlan
    from visionbench.results import Measurement


class Reporter:
    """What a run tells its user; the command line implements it, the API and tests may ignore it."""

    def start(self, key: str, plan: TimingPlan) -> Progress | None:
        return None

    def done(self, m: Measurement) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def steps(self, key: str, total: int) -> Callable[[int, str], None] | None:
        """A bar counting ``total`` steps of something long (a fleet node's measurements): the
        returned callable takes the steps done and a state."""
        return None
