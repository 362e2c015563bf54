"""The small legacy PC ports an operating system touches while it boots.

Just enough of each for a guest to reset the machine, read back what it
wrote, or find "nothing here" instead of open bus.
"""

from __future__ import annotations

from ..stop import StopKind, StopReason, StopSink

A20_GATE = 0x02
FAST_RESET = 0x01


class FastA20:
    """System control port A (0x92): bit 1 gates A20, bit 0 resets the CPU."""

    def __init__(self, stop: StopSink) -> None:
        self._stop = stop
        self._value = A20_GATE  # KVM never masks A20, so it reads as enabled

    def read(self, offset: int, size: int) -> int:
        return self._value

    def write(self, offset: int, size: int, value: int) -> None:
        # The chipset resets on a 0 -> 1 edge of bit 0, not on its level.
        edge = value & FAST_RESET and not self._value & FAST_RESET
        self._value = value & 0xFF
        if edge:
            self._stop(StopReason(StopKind.RESET, "reset through port 0x92"))


# 8042 status register bits (Intel 8042 / IBM PC AT technical reference).
I8042_STATUS_OBF = 0x01  # output buffer full: data waits at 0x60 (never here)
I8042_STATUS_IBF = 0x02  # input buffer full: controller busy (never here)
I8042_STATUS_SYS = 0x04  # system flag: the self-test passed
I8042_STATUS_CMD = 0x08  # the last byte written went to 0x64 (a command)
I8042_STATUS_UNLOCKED = 0x10  # keyboard not inhibited


class I8042:
    """The keyboard controller as a probing guest sees it: no data, always
    ready, and a CPU reset on the pulse-output-port commands.

    Registered over 0x60..0x64: offset 0 is the data port, offset 4 the
    status (read) and command (write) port; offsets 1-3 read 0.
    """

    DATA = 0
    COMMAND = 4

    def __init__(self, stop: StopSink) -> None:
        self._stop = stop
        self._status = I8042_STATUS_SYS | I8042_STATUS_UNLOCKED

    def read(self, offset: int, size: int) -> int:
        return self._status if offset == self.COMMAND else 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == self.DATA:
            self._status &= ~I8042_STATUS_CMD
        elif offset == self.COMMAND:
            self._status |= I8042_STATUS_CMD
            # 0xF0-0xFF pulse the output-port lines whose bits are 0; line 0 is
            # the CPU reset, so 0xFE (the usual reboot command) resets.
            if value & 0xF1 == 0xF0:
                message = f"reset through the keyboard controller ({value & 0xFF:#04x})"
                self._stop(StopReason(StopKind.RESET, message))


class DebugExit:
    """A debug-exit port (0xF4, as QEMU's isa-debug-exit is usually placed).

    The value written is the guest's exit code: 0 is success. Unlike QEMU,
    which exits with (code << 1) | 1, minikvm reports the code itself.
    """

    def __init__(self, stop: StopSink) -> None:
        self._stop = stop

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        message = f"debug exit with code {value}"
        self._stop(StopReason(StopKind.DEBUG_EXIT, message, exit_code=value))


class NullDevice:
    """Reads 0 and ignores writes: a port that is there but does nothing."""

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        pass
