def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none), for one-liners."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class DlrunError(Exception):
    """A problem with the user's input or environment, reported as one clear line (no traceback)."""


class NonFiniteLossError(DlrunError):
    """The training loss became NaN or infinite."""
