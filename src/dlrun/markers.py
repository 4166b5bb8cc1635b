"""Generated Markdown between two marker comments of a hand-written file (docs/performance.md,
docs/results.md): the text outside the markers is kept."""

from pathlib import Path

from dlrun.atomic import replacing


def write_between(path: str | Path, begin: str, end: str, body: str) -> None:
    """Put `body` between the `begin` and `end` lines of `path`, replacing what was there. A file without
    the markers gets them, with `body`, at its end; a missing file is created."""
    path = Path(path)
    block = f"{begin}\n{body}\n{end}"
    text = path.read_text() if path.is_file() else ""
    if begin in text and end in text[text.index(begin) :]:
        start = text.index(begin)
        stop = text.index(end, start) + len(end)
        text = text[:start] + block + text[stop:]
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block
    with replacing(path) as tmp:
        tmp.write_text(text if text.endswith("\n") else text + "\n")
