def first_line(err: BaseException, limit: int = 300) -> str:
    """An exception's message cut to its first line (its type's name when it has none), for one-liners;
    at most `limit` characters (a binary file's "line" can be kilobytes)."""
    text = str(err).strip()
    return shorten(text.splitlines()[0], limit) if text else type(err).__name__


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more characters)"


class DlrunError(Exception):
    """A problem with the user's input or environment, reported as one clear line (no traceback)."""


class NonFiniteLossError(DlrunError):
    """The training loss became NaN or infinite."""
