"""The one exception type whose message is shown to the user as a single line."""


class VisionbenchError(Exception):
    """A problem with the user's input or machine, stated in one line; never a bug."""


def describe(e: BaseException) -> str:
    """One line for an exception: our own message as is, anything else with its type."""
    if isinstance(e, VisionbenchError):
        return str(e)
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is: what was measured is kept, the run is marked
    interrupted, and the process exits with 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
