"""Errors a loader raises about the image it was given."""

from __future__ import annotations

from ..errors import MinikvmError


class ImageError(MinikvmError):
    """The guest image cannot be loaded; `path` names it."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")
