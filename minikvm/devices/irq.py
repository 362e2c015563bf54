"""An interrupt request line between one device and the interrupt controller."""

from __future__ import annotations

from collections.abc import Callable


class IrqLine:
    """A level-triggered line that tells the controller only about changes.

    Devices recompute their level after every access and call `set`; passing
    each change on, and only changes, keeps the controller quiet (kvmtool's
    rule). Without a controller (`set_level` None) the level is still tracked.
    """

    def __init__(self, set_level: Callable[[bool], None] | None = None) -> None:
        self._set_level = set_level
        self._level = False

    @property
    def level(self) -> bool:
        return self._level

    def set(self, level: bool) -> None:
        if level == self._level:
            return
        self._level = level
        if self._set_level is not None:
            self._set_level(level)

    def raise_(self) -> None:
        self.set(True)

    def lower(self) -> None:
        self.set(False)
