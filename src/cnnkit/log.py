"""cnnkit's messages go through the standard ``logging`` module; library code never prints.

Everything logs to the ``cnnkit`` logger (or a child of it): INFO for what a run is doing, WARNING
for what a person should know, DEBUG for checkpoint commits. A program that uses the API chooses
what it sees, as with any library (``logging.basicConfig(level=logging.INFO)``, or :func:`show`
for cnnkit's own one-line format); by default only warnings reach stderr.

The command line calls :func:`show`: each message is one line ``cnnkit: ...`` on stdout, the
run's narrative beside Keras's progress, except :func:`notice` messages (downloads, decoding,
Ctrl-C) and DEBUG ones, which go to stderr so that a verb's answer on stdout stays clean.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("cnnkit")
_STDERR = "cnnkit_stderr"


def notice(message: str) -> None:
    """A progress notice: shown on stderr by the command line."""
    logger.info(message, extra={_STDERR: True})


def printable(text: object) -> str:
    """``text`` safe to print as part of one line: control characters (a newline in a file name
    could fake a result line), line and paragraph separators and Unicode format characters
    (such as a right-to-left override) are shown as Python escapes."""
    value = str(text)
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else _escape(c) for c in value)


def _escape(char: str) -> str:
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


class _Lines(logging.Handler):
    """``cnnkit: [warning: ]message``, on the sys.stdout or sys.stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prefix = "warning: " if record.levelno == logging.WARNING else ""
            to_stderr = getattr(record, _STDERR, False) or record.levelno < logging.INFO
            stream = sys.stderr if to_stderr else sys.stdout
            print(f"cnnkit: {prefix}{printable(record.getMessage())}", file=stream, flush=True)
        except Exception:
            self.handleError(record)


def show(debug: bool = False) -> None:
    """Print cnnkit's messages as the command line does (INFO and up; DEBUG too with ``debug``).
    Calling it again replaces the earlier setting."""
    for handler in [h for h in logger.handlers if isinstance(h, _Lines)]:
        logger.removeHandler(handler)
    logger.addHandler(_Lines())
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False  # shown once, in this format, whatever the root logger does
