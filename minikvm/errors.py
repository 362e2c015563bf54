"""The root of every error minikvm raises on purpose.

Each error carries the facts (address, length, port, path) as attributes, so a
front end can print one clear line and tests can check what went wrong.
"""


class MinikvmError(Exception):
    """Root of minikvm's own errors; anything else escaping is a bug."""
