"""The 8254 driven through its ports against a fake clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from minikvm.devices.bus import Bus
from minikvm.devices.irq import IrqLine
from minikvm.devices.pic import Pic8259Pair
from minikvm.devices.pit import FREQUENCY, Pit8254, PitState

CH0, CH1, CH2, CONTROL = 0x40, 0x41, 0x42, 0x43
# Control words as drivers write them: SC | RW | mode | BCD.
CH0_WORD_MODE0 = 0x30
CH0_WORD_MODE2 = 0x34  # Linux's periodic tick
CH0_WORD_MODE3 = 0x36  # the usual hobby-kernel and BIOS choice
CH0_LSB_MODE2 = 0x14
CH0_MSB_MODE2 = 0x24
CH0_WORD_MODE2_BCD = 0x35
CH0_LATCH = 0x00
CH2_WORD_MODE0 = 0xB0
CH2_WORD_MODE1 = 0xB2
CH2_WORD_MODE2 = 0xB4
HZ_100 = 11932  # 1193182 / 100, rounded
PERIOD_100 = HZ_100 / FREQUENCY


def clocks(n: float) -> float:
    return n / FREQUENCY


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(self, start: float = 0.0) -> None:
        self.clock = Clock(start)
        self.heard: list[bool] = []  # the IRQ 0 line's changes
        self.pit = Pit8254(IrqLine(self.heard.append), self.clock)
        self.bus = Bus()
        self.bus.register(0x40, 4, self.pit, "pit")

    @property
    def pulses(self) -> int:
        assert self.heard == [True, False] * (len(self.heard) // 2)  # every raise is lowered at once
        return len(self.heard) // 2

    def outb(self, port: int, value: int) -> None:
        self.bus.write(port, 1, value)

    def inb(self, port: int) -> int:
        return self.bus.read(port, 1)

    def program(self, word: int, count: int, port: int = CH0) -> None:
        self.outb(CONTROL, word)
        self.outb(port, count & 0xFF)
        self.outb(port, count >> 8)

    def read_word(self, port: int = CH0) -> int:
        low = self.inb(port)
        return low | self.inb(port) << 8

    def latched(self, port: int = CH0) -> int:
        self.outb(CONTROL, (port - CH0) << 6)  # counter latch command
        return self.read_word(port)

    def at(self, t: float) -> Rig:
        self.clock.now = t
        return self


@pytest.mark.parametrize("word", [CH0_WORD_MODE2, CH0_WORD_MODE3])
def test_100_hz_gives_100_edges_in_each_second(word: int) -> None:
    rig = Rig()
    rig.program(word, HZ_100)
    times = []
    while (deadline := rig.pit.next_deadline()) is not None and deadline <= 2.0:
        rig.clock.now = deadline  # the machine sleeps until the deadline ...
        assert rig.pit.advance(deadline) == 1  # ... and finds exactly one edge due
        times.append(deadline)
    assert sum(0.5 < t <= 1.5 for t in times) == 100
    assert sum(1.0 < t <= 2.0 for t in times) == 100
    assert rig.pulses == len(times)
    # The first edge comes one period after the count is written, so the
    # hundredth lands just past the first second (11932 is not quite 100 Hz).
    assert times[0] == pytest.approx(PERIOD_100)
    assert times[99] == pytest.approx(100 * PERIOD_100)
    assert times[99] > 1.0


def test_advancing_every_millisecond_delivers_each_edge_once() -> None:
    rig = Rig()
    rig.program(CH0_WORD_MODE2, HZ_100)
    rig.pit.advance(0.5)
    before = rig.pulses
    due = 0
    for ms in range(501, 1501):
        due += rig.pit.advance(ms / 1000)
    assert due == 100
    assert rig.pulses - before == 100


def test_next_deadline_follows_programming() -> None:
    rig = Rig(start=50.0)
    assert rig.pit.next_deadline() is None  # nothing counts before the guest programs it
    rig.outb(CONTROL, CH0_WORD_MODE2)
    assert rig.pit.next_deadline() is None  # a control word alone stops the channel
    rig.outb(CH0, HZ_100 & 0xFF)
    assert rig.pit.next_deadline() is None  # half a count
    rig.at(50.25).outb(CH0, HZ_100 >> 8)
    assert rig.pit.next_deadline() == pytest.approx(50.25 + PERIOD_100)
    assert rig.pit.advance(50.25 + PERIOD_100 / 2) == 0
    assert rig.pit.advance(50.25 + PERIOD_100) == 1
    assert rig.pit.next_deadline() == pytest.approx(50.25 + 2 * PERIOD_100)


def test_missed_periods_give_one_pulse_and_keep_the_grid() -> None:
    rig = Rig()
    rig.program(CH0_WORD_MODE2, HZ_100)
    assert rig.pit.advance(0.5) == 49  # the host was away for half a second
    assert rig.pulses == 1  # one tick, not a burst
    assert rig.pit.next_deadline() == pytest.approx(50 * PERIOD_100)  # on the original grid
    assert rig.pit.advance(0.5) == 0
    assert rig.pit.advance(50 * PERIOD_100) == 1
    assert rig.pulses == 2


def test_pulses_reach_the_pic_as_irq0() -> None:
    clock = Clock()
    pic = Pic8259Pair()
    pit = Pit8254(IrqLine(lambda level: pic.set_irq(0, level)), clock)
    pit.write(3, 1, CH0_WORD_MODE3)
    pit.write(0, 1, HZ_100 & 0xFF)
    pit.write(0, 1, HZ_100 >> 8)
    assert pic.pending_vector() is None
    pit.advance(PERIOD_100)
    assert pic.acknowledge() == 0x08  # BIOS vector of IRQ 0


def test_word_writes_and_reads_count_down_with_time() -> None:
    rig = Rig()
    rig.program(CH0_WORD_MODE2, 0x1234)
    assert rig.read_word() == 0x1234
    rig.at(clocks(0x100))
    assert rig.read_word() == 0x1134
    rig.at(clocks(0x1234 + 0x34))  # one full period later plus 0x34
    assert rig.read_word() == 0x1200


def test_lsb_only_and_msb_only_access() -> None:
    rig = Rig()
    rig.outb(CONTROL, CH0_LSB_MODE2)
    rig.outb(CH0, 0x80)
    rig.at(clocks(0x10))
    assert rig.inb(CH0) == 0x70
    assert rig.inb(CH0) == 0x70  # every read is the low byte
    assert rig.pit.next_deadline() == pytest.approx(clocks(0x80))
    rig.outb(CONTROL, CH0_MSB_MODE2)
    rig.outb(CH0, 0x12)  # count 0x1200
    assert rig.pit.next_deadline() == pytest.approx(clocks(0x10 + 0x1200))
    rig.at(clocks(0x10 + 0x101))
    assert rig.inb(CH0) == 0x10  # 0x1200 - 0x101 = 0x10FF: the high byte


def test_latch_freezes_the_count_until_it_is_read() -> None:
    rig = Rig()
    rig.program(CH0_WORD_MODE2, 0x8000)
    rig.at(clocks(0x123))
    rig.outb(CONTROL, CH0_LATCH)
    rig.at(clocks(0x500))
    rig.outb(CONTROL, CH0_LATCH)  # a second latch before the read is ignored
    assert rig.inb(CH0) == (0x8000 - 0x123) & 0xFF
    rig.at(clocks(0x2000))
    assert rig.inb(CH0) == (0x8000 - 0x123) >> 8
    assert rig.read_word() == 0x8000 - 0x2000  # released: live again


def test_mode0_one_shot() -> None:
    rig = Rig()
    rig.program(CH0_WORD_MODE0, 1000)
    assert not rig.pit.output(0)
    assert rig.pit.next_deadline() == pytest.approx(clocks(1000))
    rig.at(clocks(999.5))
    assert rig.latched() == 1
    assert not rig.pit.output(0)
    assert rig.pit.advance(rig.clock.now) == 0
    rig.at(clocks(1000))
    assert rig.pit.output(0)  # terminal count: OUT goes high and stays high
    assert rig.pit.advance(rig.clock.now) == 1
    assert rig.pit.next_deadline() is None  # one shot only
    rig.at(clocks(1010))
    assert rig.pit.output(0)
    assert rig.latched() == 0x10000 - 10  # the counter wraps and keeps going
    assert rig.pit.advance(10.0) == 0
    assert rig.pulses == 1


def test_mode4_one_shot_as_linux_clockevents_use_it() -> None:
    rig = Rig()
    rig.outb(CONTROL, 0x38)  # pit_set_oneshot: channel 0, lobyte/hibyte, mode 4
    rig.outb(CH0, 1000 & 0xFF)
    rig.outb(CH0, 1000 >> 8)  # pit_next_event
    levels = [rig.at(clocks(t)).pit.output(0) for t in (0, 999, 1000, 1001)]
    assert levels == [True, True, False, True]  # a one-clock strobe at terminal count
    assert rig.pit.next_deadline() == pytest.approx(clocks(1001))  # IRQ 0 rises as it ends
    assert rig.pit.advance(clocks(1001)) == 1
    assert rig.pit.next_deadline() is None


def test_mode0_first_byte_of_a_new_count_stops_it() -> None:
    rig = Rig()
    rig.program(CH0_WORD_MODE0, 100)
    rig.at(clocks(200))
    assert rig.pit.output(0)
    rig.outb(CH0, 50)  # low byte: counting stops, OUT drops
    assert not rig.pit.output(0)
    assert rig.pit.next_deadline() is None
    rig.at(clocks(300)).outb(CH0, 0)  # high byte: counts 50 from here
    assert rig.pit.next_deadline() == pytest.approx(clocks(350))
    assert rig.pulses == 1  # the first terminal count was delivered before the rewrite


def test_mode3_output_is_a_square_wave() -> None:
    rig = Rig()
    rig.program(CH0_WORD_MODE3, 1001)  # odd: the extra clock is spent high
    levels = [rig.at(clocks(t)).pit.output(0) for t in (0, 500, 501, 1000, 1001, 1501, 1502)]
    assert levels == [True, True, False, False, True, True, False]
    rig.at(clocks(0))
    assert rig.latched() == 1001
    rig.at(clocks(1))
    assert rig.latched() == 1000  # 1 off first, then 2 per clock
    rig.at(clocks(3))
    assert rig.latched() == 996


def test_mode2_output_dips_for_one_clock() -> None:
    rig = Rig()
    rig.program(CH0_WORD_MODE2, 100)
    levels = [rig.at(clocks(t)).pit.output(0) for t in (0, 98, 99, 100, 199)]
    assert levels == [True, True, False, True, False]


def test_a_new_count_in_mode2_waits_for_the_period_to_end() -> None:
    rig = Rig()
    rig.program(CH0_WORD_MODE2, 1000)
    rig.at(clocks(2300))
    assert rig.pit.advance(rig.clock.now) == 2
    rig.outb(CH0, 500 & 0xFF)
    rig.outb(CH0, 500 >> 8)
    assert rig.pit.next_deadline() == pytest.approx(clocks(3000))  # the old period still ends on time
    assert rig.latched() == 700  # still counting the old period
    assert rig.pit.advance(clocks(3000)) == 1
    assert rig.pit.next_deadline() == pytest.approx(clocks(3500))
    rig.at(clocks(3100))
    assert rig.latched() == 400


def test_count_zero_means_65536() -> None:
    rig = Rig()
    rig.program(CH0_WORD_MODE3, 0)  # the BIOS's 18.2 Hz
    assert rig.pit.next_deadline() == pytest.approx(clocks(65536))
    rig.at(clocks(2))
    assert rig.latched() == 0x10000 - 4


def test_bcd_counts_in_decimal() -> None:
    rig = Rig()
    rig.program(CH0_WORD_MODE2_BCD, 0x1000)  # 1000, not 4096
    assert rig.pit.next_deadline() == pytest.approx(clocks(1000))
    rig.at(clocks(1))
    assert rig.latched() == 0x0999
    rig.program(CH0_WORD_MODE2_BCD, 0)  # 0 is 10000 in BCD
    assert rig.pit.next_deadline() == pytest.approx(clocks(1 + 10_000))
    rig.at(clocks(3))
    assert rig.latched() == 0x9998


def test_read_back_latches_status_then_count() -> None:
    rig = Rig()
    rig.program(CH0_WORD_MODE2, 0x0400)
    rig.at(clocks(0x100))
    rig.outb(CONTROL, 0xC2)  # read-back: latch count and status of channel 0
    rig.at(clocks(0x200))
    # OUT high, count loaded, lobyte/hibyte, mode 2, binary.
    assert rig.inb(CH0) == 0x80 | 0x30 | 0x04
    assert rig.read_word() == 0x0300
    rig.outb(CONTROL, 0xE4)  # status only, channel 1: never programmed
    assert rig.inb(CH1) == 0x40 | 0x30  # null count, OUT low in mode 0


def test_reprogramming_delivers_the_edge_already_due() -> None:
    rig = Rig()
    rig.program(CH0_WORD_MODE0, 100)
    rig.at(clocks(150)).outb(CONTROL, CH0_WORD_MODE0)  # the machine had not advanced yet
    assert rig.pulses == 1


def test_channel2_mode0_counts_only_with_the_gate_up() -> None:
    rig = Rig()
    rig.program(CH2_WORD_MODE0, 1000, port=CH2)
    rig.at(clocks(500))
    assert rig.latched(CH2) == 1000  # the gate is low after reset
    rig.pit.set_gate(2, True)
    rig.at(clocks(900))
    assert rig.latched(CH2) == 600
    rig.pit.set_gate(2, False)
    rig.at(clocks(5000))
    assert rig.latched(CH2) == 600
    assert not rig.pit.output(2)
    rig.pit.set_gate(2, True)
    rig.at(clocks(5600))
    assert rig.pit.output(2)
    assert rig.pulses == 0  # channel 2 is not wired to IRQ 0


def test_channel2_mode1_starts_on_a_rising_gate() -> None:
    rig = Rig()
    rig.program(CH2_WORD_MODE1, 100, port=CH2)
    rig.at(clocks(1000))
    assert rig.pit.output(2)  # armed, untriggered: OUT high
    assert rig.latched(CH2) == 100  # the count waits in the count register
    rig.pit.set_gate(2, True)
    rig.at(clocks(1050))
    assert not rig.pit.output(2)
    rig.at(clocks(1100))
    assert rig.pit.output(2)


def test_channel2_mode2_gate_low_holds_out_high_and_rising_restarts() -> None:
    rig = Rig()
    rig.pit.set_gate(2, True)
    rig.program(CH2_WORD_MODE2, 100, port=CH2)
    rig.at(clocks(30))
    rig.pit.set_gate(2, False)
    rig.at(clocks(99 + 100))
    assert rig.pit.output(2)
    assert rig.latched(CH2) == 70
    rig.pit.set_gate(2, True)  # reloads
    rig.at(clocks(199 + 10))
    assert rig.latched(CH2) == 90


def test_control_port_reads_as_open_bus() -> None:
    assert Rig().inb(CONTROL) == 0xFF


def test_state_restores_under_another_clock() -> None:
    rig = Rig(start=10.0)
    rig.program(CH0_WORD_MODE2, HZ_100)
    rig.at(10.0 + 2.5 * PERIOD_100)
    rig.pit.advance(rig.clock.now)
    rig.outb(CONTROL, CH0_LATCH)
    rig.outb(CONTROL, CH2_WORD_MODE0)
    saved = rig.pit.state()
    assert isinstance(saved, PitState)
    other = Rig(start=500.0)  # another process: another monotonic clock
    other.pit.restore(saved)
    again = other.pit.state()
    ages = [channel.running_for for channel in again.channels]
    assert ages == pytest.approx([channel.running_for for channel in saved.channels])
    assert [replace(channel, running_for=None) for channel in again.channels] == [
        replace(channel, running_for=None) for channel in saved.channels
    ]
    assert other.read_word() == HZ_100 // 2  # the latch came along
    assert other.pit.next_deadline() == pytest.approx(500.0 + 0.5 * PERIOD_100)
    assert other.pit.advance(500.0 + 0.5 * PERIOD_100) == 1


def test_restore_refuses_a_wrong_channel_count() -> None:
    with pytest.raises(ValueError, match="3 channels"):
        Rig().pit.restore(PitState(channels=()))
