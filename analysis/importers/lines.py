"""Line-oriented logs read incrementally: each call returns the lines completed since the last one."""

from collections.abc import Iterator
from pathlib import Path

from analysis.errors import UsageError


class LineTail:
    """The complete lines appended to a file since the last `lines()` call.

    A last line without its newline is the writer's line in progress: it waits for its newline, except
    in a `final` read (a one-shot import of a finished file), where it is handed over marked as the tail,
    so the caller can drop it quietly if it does not parse.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lineno = 0

    def lines(self, final: bool) -> Iterator[tuple[int, bytes, bool]]:
        """(line number, line, is_unterminated_tail) for each new line; blank lines skipped."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError as err:
            raise UsageError(f"cannot read {self.path}: {err.strerror or err}") from None
        end = data.rfind(b"\n") + 1
        for line in data[:end].split(b"\n")[:-1]:
            self.lineno += 1
            if line.strip():
                yield self.lineno, line, False
        self.offset += end
        tail = data[end:]
        if final and tail.strip():
            yield self.lineno + 1, tail, True
