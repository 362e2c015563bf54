"""The root of every error minikvm raises on purpose.

Each error carries the facts (address, length, port, path) as attributes, so a
front end can print one clear line and tests can check what went wrong.
"""


class MinikvmError(Exception):
    """Root of minikvm's own errors; anything else escaping is a bug."""


def printable(text: str) -> str:
    """`text` for one line of a message: control characters (a newline in a file name) escaped, and a
    byte of a path that was not UTF-8 (a surrogate escape) shown as that byte."""
    return "".join(c if c.isprintable() else f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF
                   else repr(c)[1:-1] for c in text)
