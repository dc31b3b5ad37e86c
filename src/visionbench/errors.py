"""The one exception type whose message is shown to the user as a single line."""

import re


class VisionbenchError(Exception):
    """A problem with the user's input or machine, stated in one line; never a bug."""


class Unconfirmed(VisionbenchError):
    """Something that deletes the user's files, asked for without their confirmation: the
    command line asks on a terminal and says how to confirm elsewhere."""


def describe(e: BaseException) -> str:
    """One line for an exception: our own message as is, anything else with its type."""
    if isinstance(e, VisionbenchError):
        return str(e)
    # OpenVINO prefixes its reason with a chain of "Exception from src/...cpp:117:" lines.
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    first = next((ln for ln in lines if not re.fullmatch(r"Exception from \S+:\d+:", ln)),
                 lines[0] if lines else "")[:200]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is: what was measured is kept, the run is marked
    interrupted, and the process exits with 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
