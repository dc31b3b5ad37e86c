"""The one exception type whose message is shown to the user as a single line."""


class VisionbenchError(Exception):
    """A problem with the user's input or machine, stated in one line; never a bug."""


def describe(e: BaseException) -> str:
    """One line for an exception: our own message as is, anything else with its type."""
    if isinstance(e, VisionbenchError):
        return str(e)
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
