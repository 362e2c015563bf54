"""System control port B (0x61): the PC speaker's switches and a few status bits.

Bit 0 gates PIT channel 2 and bit 1 passes its output to the speaker; bit 5
reads channel 2's output, which is what operating systems poll when they
calibrate their clocks against the PIT. Bit 4 toggled with every DRAM
refresh on an AT, and BIOS-era delay loops wait for it to change, so here it
flips on every read: such a loop always sees a change and ends.

Bits 2-3 (parity and I/O channel check enables on an AT) read back what was
written and do nothing; bits 6-7 (those checks' error flags) read 0; writes
to bits 4-7 are ignored, as they are read-only.
"""

from __future__ import annotations

from dataclasses import dataclass

from .pit import SPEAKER_CHANNEL, Pit8254

GATE2 = 0x01  # PIT channel 2 gate
SPEAKER_DATA = 0x02  # channel 2's output reaches the speaker
WRITABLE = 0x0F  # bits 0-3; bits 2-3 are remembered only
REFRESH = 0x10
OUT2 = 0x20


@dataclass(frozen=True)
class SystemControlState:
    value: int = 0  # bits 0-3 as written
    refresh: bool = False  # the level bit 4 showed at the last read


class SystemControlPortB:
    def __init__(self, pit: Pit8254) -> None:
        self._pit = pit
        self._load(SystemControlState())

    def read(self, offset: int, size: int) -> int:
        # One 8-bit port: any further bytes of a wide access float high.
        self._refresh = not self._refresh
        value = self._value | (REFRESH if self._refresh else 0)
        if self._pit.output(SPEAKER_CHANNEL):
            value |= OUT2
        return value | (0xFFFF_FF00 & ((1 << (8 * size)) - 1))

    def write(self, offset: int, size: int, value: int) -> None:
        self._value = value & WRITABLE
        self._pit.set_gate(SPEAKER_CHANNEL, bool(value & GATE2))

    def state(self) -> SystemControlState:
        return SystemControlState(self._value, self._refresh)

    def restore(self, state: SystemControlState) -> None:
        self._load(state)

    def _load(self, state: SystemControlState) -> None:
        self._value = state.value & WRITABLE
        self._refresh = state.refresh
        # The gate lives in the PIT: make it agree with the restored bit.
        self._pit.set_gate(SPEAKER_CHANNEL, bool(self._value & GATE2))
