"""The one exception type whose message is shown to the user as a single line."""


class VisionbenchError(Exception):
    """A problem with the user's input or machine, stated in one line; never a bug."""
