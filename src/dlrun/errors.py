class DlrunError(Exception):
    """A problem with the user's input or environment, reported as one clear line (no traceback)."""


class NonFiniteLossError(DlrunError):
    """The training loss became NaN or infinite."""
