"""Port 0x61 with the PIT behind it, driven as clock-calibration code drives it."""

from __future__ import annotations

import pytest

from minikvm.devices.bus import Bus
from minikvm.devices.pit import FREQUENCY, Pit8254
from minikvm.devices.sysctl import SystemControlPortB, SystemControlState

PORT_B = 0x61
CH2, CONTROL = 0x42, 0x43
CH2_WORD_MODE0 = 0xB0  # channel 2, lobyte/hibyte, mode 0, binary
GATE2 = 0x01
SPEAKER = 0x02
REFRESH = 0x10
OUT2 = 0x20


class LoopClock:
    """A guest in a polling loop: every look at the clock is 10 µs later."""

    def __init__(self) -> None:
        self.now = 0.0
        self.step = 1e-5

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class Rig:
    def __init__(self) -> None:
        self.clock = LoopClock()
        self.pit = Pit8254(clock=self.clock)
        self.port = SystemControlPortB(self.pit)
        self.bus = Bus()
        self.bus.register(0x40, 4, self.pit, "pit")
        self.bus.register(PORT_B, 1, self.port, "port 0x61")

    def outb(self, port: int, value: int) -> None:
        self.bus.write(port, 1, value)

    def inb(self, port: int) -> int:
        return self.bus.read(port, 1)


def test_written_bits_read_back_and_read_only_bits_ignore_writes() -> None:
    rig = Rig()
    assert rig.inb(PORT_B) & (GATE2 | SPEAKER) == 0  # reset: gate and speaker off
    rig.outb(PORT_B, 0xFF)
    value = rig.inb(PORT_B)
    assert value & 0x0F == 0x0F  # gate, speaker, and the AT's check enables
    assert value & 0xC0 == 0  # no parity or I/O channel errors
    assert value & OUT2 == 0  # writing bit 5 does not set the PIT's output
    rig.outb(PORT_B, 0x02)
    assert rig.inb(PORT_B) & 0x0F == 0x02


def test_refresh_bit_toggles_on_every_read() -> None:
    rig = Rig()
    seen = [rig.inb(PORT_B) & REFRESH for _ in range(4)]
    assert seen == [REFRESH, 0, REFRESH, 0]


def test_linux_pit_calibration_loop_ends_after_the_programmed_time() -> None:
    """pit_calibrate_tsc: gate on, speaker off, channel 2 mode 0 with a 50 ms
    count, then spin until port 0x61 bit 5 says terminal count."""
    rig = Rig()
    latch = FREQUENCY // 20
    rig.outb(PORT_B, (rig.inb(PORT_B) & ~SPEAKER) | GATE2)
    rig.outb(CONTROL, CH2_WORD_MODE0)
    rig.outb(CH2, latch & 0xFF)
    rig.outb(CH2, latch >> 8)
    start = rig.clock.now
    loops = 0
    while not rig.inb(PORT_B) & OUT2:
        loops += 1
        assert loops < 100_000, "OUT2 never rose"
    assert rig.clock.now - start == pytest.approx(0.05, abs=2e-5)


def test_quick_calibration_reads_msb_falling() -> None:
    """quick_pit_calibrate: count from 0xFFFF and watch the high byte fall."""
    rig = Rig()
    rig.outb(PORT_B, GATE2)
    rig.outb(CONTROL, CH2_WORD_MODE0)
    rig.outb(CH2, 0xFF)
    rig.outb(CH2, 0xFF)
    msbs = []
    for _ in range(3):
        rig.clock.now += 256 / FREQUENCY  # one MSB step
        rig.inb(CH2)  # the low byte, discarded
        msbs.append(rig.inb(CH2))
    assert msbs == [0xFE, 0xFD, 0xFC]


def test_gate_bit_holds_channel_2() -> None:
    rig = Rig()
    rig.outb(CONTROL, CH2_WORD_MODE0)
    rig.outb(CH2, 100)
    rig.outb(CH2, 0)
    rig.clock.now += 1.0
    assert not rig.inb(PORT_B) & OUT2  # gate low since reset: nothing counted
    rig.outb(PORT_B, GATE2)
    rig.clock.now += 100 / FREQUENCY
    assert rig.inb(PORT_B) & OUT2


def test_state_restores_the_bits_and_the_gate() -> None:
    rig = Rig()
    rig.outb(PORT_B, GATE2 | SPEAKER)
    rig.inb(PORT_B)
    saved = rig.port.state()
    assert saved == SystemControlState(value=GATE2 | SPEAKER, refresh=True)
    other = Rig()
    other.port.restore(saved)
    assert other.inb(PORT_B) & 0x1F == GATE2 | SPEAKER  # and the refresh bit flipped to 0
    other.outb(CONTROL, CH2_WORD_MODE0)
    other.outb(CH2, 10)
    other.outb(CH2, 0)
    other.clock.now += 10 / FREQUENCY
    assert other.inb(PORT_B) & OUT2  # the restored gate is up in the PIT
