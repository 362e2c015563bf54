"""The Intel 8254 programmable interval timer at ports 0x40-0x43.

Three 16-bit down counters clocked at 1,193,182 Hz. On a PC channel 0's
output drives IRQ 0, channel 1 once paced DRAM refresh, and channel 2's gate
and output are bits 0 and 5 of port 0x61 (the speaker, and the reference that
operating systems calibrate their clocks against). Offsets 0-2 are the
channels' count registers, offset 3 the control word register.

Nothing here runs by itself. Counters are not ticked: a count is computed
from the injected clock whenever it is read, and the machine delivers IRQ 0
by asking `next_deadline()` when the next edge is due and calling
`advance(now)` once that time has come.

Where this model departs from the chip, or the datasheet leaves room:

- A count written takes effect at once; the chip's one-clock load delay
  (0.84 µs) is not modelled. So with divisor N, IRQ 0 edges come N, 2N, ...
  clocks after the write: programming 100 Hz (N = 11932) gives a first edge
  10.00015 ms later and the hundredth at 1.000015 s.
- A new count written to a running rate generator (mode 2) or square wave
  (mode 3) without a new control word takes over at the end of the current
  period, so the edges stay on their grid; the datasheet makes mode 3 switch
  at the next half period instead.
- Channel 0's output reaches the PIC as a pulse (raise, then lower) at each
  rising edge of OUT, which is all an edge-triggered 8259A sees. In mode 3
  that is one pulse per period; in modes 0 and 1 one at terminal count; in
  the strobe modes 4 and 5 one when the one-clock low strobe ends.
- Missed periods are not replayed: when `advance` finds several edges due
  (the host was busy), IRQ 0 is pulsed once and the edges stay on the grid
  of the original programming. The PIC would merge the pulses into one
  request anyway; the guest sees a lost tick, not a burst of late ones.
- Modes 6 and 7 are modes 2 and 3, as on the chip (the status byte then
  reports 2 and 3). Modes 1 and 5 wait for a rising gate; the gates of
  channels 0 and 1 are tied high on a PC, so there these modes never start.
- BCD counting is implemented (four decades, 0 means 10000); a digit above
  9 counts as its binary value. A count of 1 in modes 2 and 3, illegal on
  the chip, gives one edge per input clock.
- Before the first control word each channel is in mode 0 with lobyte/hibyte
  access, no count and OUT low: the chip's power-up state is undefined, and
  nothing counts until the guest programs it (there is no BIOS here).
- Reading the control word register (offset 3) returns 0xFF, as an undriven
  bus would; the 8254 does not drive it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .irq import IrqLine

FREQUENCY = 1_193_182  # Hz: the PC's 14.318 MHz crystal divided by 12
TIMER_CHANNEL = 0  # its output is IRQ 0
SPEAKER_CHANNEL = 2  # its gate and output are at port 0x61

CONTROL = 3  # port offset of the control word register

# Control word: SC1 SC0 | RW1 RW0 | M2 M1 M0 | BCD
SELECT_SHIFT = 6
READ_BACK = 3  # SC = 11
ACCESS_SHIFT = 4
ACCESS_LATCH = 0
ACCESS_LSB = 1
ACCESS_MSB = 2
ACCESS_WORD = 3  # LSB then MSB
MODE_SHIFT = 1
CONTROL_BCD = 0x01
# Read-back command: 11 COUNT# STATUS# CNT2 CNT1 CNT0 0 (COUNT#, STATUS#: 0 latches).
READ_BACK_NO_COUNT = 0x20
READ_BACK_NO_STATUS = 0x10
# Status byte: OUT | NULL COUNT | RW1 RW0 | M2 M1 M0 | BCD
STATUS_OUTPUT = 0x80
STATUS_NULL_COUNT = 0x40

ONE_SHOT_MODES = (0, 1, 4, 5)
STROBE_MODES = (4, 5)  # OUT drops for one clock at terminal count
TRIGGERED_MODES = (1, 5)  # counting starts on a rising gate
PAUSED_BY_GATE_MODES = (0, 4)  # a low gate holds the count
RESTARTED_BY_GATE_MODES = (2, 3)  # a low gate stops, a rising gate reloads

# Added to elapsed clocks before rounding down, so that a count read at the
# exact time of an edge agrees with the edge (float products land a hair low).
_TICK_TOLERANCE = 1e-6


@dataclass(frozen=True)
class PitChannelState:
    """One counter as a plain value.

    Clock times are kept as ages (seconds before the moment `state()` ran),
    so a restored timer continues where it was under any clock.
    """

    mode: int = 0
    access: int = ACCESS_WORD
    bcd: bool = False
    reload: int = 0  # the count register as written (BCD-coded when bcd)
    armed: bool = False  # a whole count was written since the control word
    waiting: bool = False  # modes 1 and 5: armed, but no gate trigger yet
    count: int = 0  # the count the counting element runs with (0 stands for 65536/10000)
    running_for: float | None = None  # seconds since the count started (< 0: see previous); None: held
    held_elapsed: float = 0.0  # elapsed seconds at which a held count stopped
    next_edge: int = 1  # index of the next output edge not yet delivered
    # A new count waiting for the current period to end: (age of that period's
    # start, its count in clocks); the new count starts when it ends.
    previous: tuple[float, int] | None = None
    gate: bool = True
    write_msb_next: bool = False
    write_lsb: int = 0
    read_msb_next: bool = False
    latched_count: int | None = None
    latched_status: int | None = None


@dataclass(frozen=True)
class PitState:
    channels: tuple[PitChannelState, ...] = field(
        default_factory=lambda: (PitChannelState(), PitChannelState(), PitChannelState(gate=False))
    )


def _from_bcd(value: int) -> int:
    return sum(((value >> (4 * digit)) & 0xF) * 10**digit for digit in range(4))


def _to_bcd(value: int) -> int:
    return sum(((value // 10**digit) % 10) << (4 * digit) for digit in range(4))


def _square_wave_count(n: int, phase: int) -> int:
    """The mode 3 count `phase` clocks into a period of n (datasheet: the
    count goes down by two each clock, once with OUT high and once low; an
    odd count spends the extra clock high, taking 1 off at the start of the
    high half and 3 off at the start of the low half)."""
    high = (n + 1) // 2
    if n % 2 == 0:
        return n - 2 * (phase % high)
    if phase < high:
        return n if phase == 0 else n + 1 - 2 * phase
    low_phase = phase - high
    return n if low_phase == 0 else n - 1 - 2 * low_phase


class _Channel:
    """One counter. Times are clock times here; PitChannelState holds ages."""

    def __init__(self, state: PitChannelState, now: float) -> None:
        self.load(state, now)

    def load(self, state: PitChannelState, now: float) -> None:
        self.mode = state.mode
        self.access = state.access
        self.bcd = state.bcd
        self.reload = state.reload
        self.armed = state.armed
        self.waiting = state.waiting
        self.count = state.count
        self.started: float | None = None if state.running_for is None else now - state.running_for
        self.held_elapsed = state.held_elapsed
        self.next_edge = state.next_edge
        self.previous: tuple[float, int] | None = None
        if state.previous is not None:
            self.previous = (now - state.previous[0], state.previous[1])
        self.gate = state.gate
        self.write_msb_next = state.write_msb_next
        self.write_lsb = state.write_lsb
        self.read_msb_next = state.read_msb_next
        self.latched_count = state.latched_count
        self.latched_status = state.latched_status

    def save(self, now: float) -> PitChannelState:
        return PitChannelState(
            mode=self.mode,
            access=self.access,
            bcd=self.bcd,
            reload=self.reload,
            armed=self.armed,
            waiting=self.waiting,
            count=self.count,
            running_for=None if self.started is None else now - self.started,
            held_elapsed=self.held_elapsed,
            next_edge=self.next_edge,
            previous=None if self.previous is None else (now - self.previous[0], self.previous[1]),
            gate=self.gate,
            write_msb_next=self.write_msb_next,
            write_lsb=self.write_lsb,
            read_msb_next=self.read_msb_next,
            latched_count=self.latched_count,
            latched_status=self.latched_status,
        )

    # Counting.

    @property
    def modulus(self) -> int:
        return 10_000 if self.bcd else 0x1_0000

    def _clocks(self, count: int) -> int:
        """The counting element's count as a number of clocks (0 is the maximum)."""
        return count or self.modulus

    def _loaded_clocks(self) -> int:
        return self._clocks(_from_bcd(self.reload) if self.bcd else self.reload)

    @property
    def periodic(self) -> bool:
        return self.mode not in ONE_SHOT_MODES

    def _segment(self, now: float) -> tuple[float, int]:
        """(elapsed seconds, count in clocks) of the period running at `now`."""
        if self.started is None:
            return self.held_elapsed, self._clocks(self.count)
        if now < self.started and self.previous is not None:
            # A new count waits for the current period to end (see the notes).
            previous_start, previous_count = self.previous
            return now - previous_start, previous_count
        return max(now - self.started, 0.0), self._clocks(self.count)

    def _elapsed_clocks(self, now: float) -> tuple[int, int]:
        elapsed, n = self._segment(now)
        return math.floor(elapsed * FREQUENCY + _TICK_TOLERANCE), n

    def current_count(self, now: float) -> int:
        """What a read (or a latch) sees now, in the register's coding."""
        if not self.armed or self.waiting:
            return self.reload  # nothing loaded into the counting element yet
        ticks, n = self._elapsed_clocks(now)
        if self.mode == 2:
            value = n - ticks % n
        elif self.mode == 3:
            value = _square_wave_count(n, ticks % n)
        else:
            value = n - ticks  # after terminal count it wraps and keeps going
        value %= self.modulus
        return _to_bcd(value) if self.bcd else value

    def output(self, now: float) -> bool:
        if not self.armed:
            return self.mode != 0  # after a control word: low in mode 0, high otherwise
        if self.waiting:
            return True
        if self.mode in RESTARTED_BY_GATE_MODES and not self.gate:
            return True
        ticks, n = self._elapsed_clocks(now)
        if self.mode in (0, 1):
            return ticks >= n
        if self.mode in STROBE_MODES:
            return ticks != n
        if self.mode == 2:
            return ticks % n != n - 1
        return ticks % n < (n + 1) // 2  # mode 3: the longer half is high

    def null_count(self, now: float) -> bool:
        """Status bit 6: a count written but not yet in the counting element."""
        return not self.armed or self.waiting or (self.started is not None and now < self.started)

    # Output edges (the rising edges of OUT) as clock times.

    def edge_time(self, index: int) -> float | None:
        if self.started is None:
            return None
        n = self._clocks(self.count)
        if self.periodic:
            return self.started + index * n / FREQUENCY
        if index != 1:
            return None
        return self.started + (n + (1 if self.mode in STROBE_MODES else 0)) / FREQUENCY

    def _last_edge(self, started: float, now: float) -> int:
        """Index of the last periodic edge at or before `now`. Settled against
        edge_time itself, so an edge is due at exactly the time it was named."""
        n = self._clocks(self.count)
        last = math.floor((now - started) * FREQUENCY / n)
        while started + (last + 1) * n / FREQUENCY <= now:
            last += 1
        while started + last * n / FREQUENCY > now:
            last -= 1
        return last

    def take_due(self, now: float) -> int:
        """How many edges came due up to `now` since the last call; marks them taken."""
        if self.started is None:
            return 0
        if not self.periodic:
            due_at = self.edge_time(1)
            if self.next_edge <= 1 and due_at is not None and due_at <= now:
                self.next_edge = 2
                return 1
            return 0
        last = self._last_edge(self.started, now)
        due = max(0, last - self.next_edge + 1)
        self.next_edge += due
        return due

    # Programming.

    def control(self, mode: int, access: int, bcd: bool) -> None:
        """A control word: the channel stops and waits for a count."""
        self.mode = mode if mode < 6 else mode - 4
        self.access = access
        self.bcd = bcd
        self.armed = self.waiting = False
        self.started = self.previous = None
        self.held_elapsed = 0.0
        self.next_edge = 1
        self.write_msb_next = self.read_msb_next = False
        self.latched_count = self.latched_status = None

    def write_byte(self, value: int, now: float) -> None:
        if self.access == ACCESS_LSB:
            self._load(value, now)
        elif self.access == ACCESS_MSB:
            self._load(value << 8, now)
        elif not self.write_msb_next:
            self.write_lsb = value
            self.write_msb_next = True
            if self.mode == 0:
                # The datasheet: the first byte stops the count and drops OUT.
                self.armed = False
                self.started = None
        else:
            self.write_msb_next = False
            self._load(self.write_lsb | value << 8, now)

    def _load(self, reload: int, now: float) -> None:
        self.reload = reload
        count = _from_bcd(reload) if self.bcd else reload
        first = not self.armed
        self.armed = True
        if self.mode in TRIGGERED_MODES:
            if self.started is None:
                self.waiting = True  # loaded by the next rising gate
            return
        if self.periodic and not first and self.started is not None:
            self._switch_at_period_end(self.started, count, now)
            return
        self.count = count
        self.next_edge = 1
        self.previous = None
        self.held_elapsed = 0.0
        self.started = now if self.gate else None

    def _switch_at_period_end(self, started: float, count: int, now: float) -> None:
        if now < started:
            self.count = count  # already waiting for this period's end
            return
        end = self.edge_time(self._last_edge(started, now) + 1)
        assert end is not None
        self.previous = (started, self._clocks(self.count))
        self.started = end
        self.count = count
        self.next_edge = 0  # the end of the old period is the new period's first edge

    def set_gate(self, level: bool, now: float) -> None:
        if level == self.gate:
            return
        self.gate = level
        if not self.armed:
            return
        if self.mode in PAUSED_BY_GATE_MODES:
            if level:
                self.started = now - self.held_elapsed
            else:
                self.held_elapsed, _ = self._segment(now)
                self.started = None
        elif self.mode in RESTARTED_BY_GATE_MODES:
            if level:
                self._restart(now)
            else:
                self.held_elapsed, self.count = self._segment(now)
                self.count %= self.modulus
                self.started = self.previous = None
        elif level:  # modes 1 and 5: a rising gate (re)triggers
            self._restart(now)

    def _restart(self, now: float) -> None:
        self.count = self._loaded_clocks() % self.modulus
        self.waiting = False
        self.started = now
        self.previous = None
        self.next_edge = 1
        self.held_elapsed = 0.0

    # Reading.

    def latch_count(self, now: float) -> None:
        if self.latched_count is None:  # a second latch before the read is ignored
            self.latched_count = self.current_count(now)

    def latch_status(self, now: float) -> None:
        if self.latched_status is None:
            status = (
                (STATUS_OUTPUT if self.output(now) else 0)
                | (STATUS_NULL_COUNT if self.null_count(now) else 0)
                | self.access << ACCESS_SHIFT
                | self.mode << MODE_SHIFT
                | (CONTROL_BCD if self.bcd else 0)
            )
            self.latched_status = status

    def read_byte(self, now: float) -> int:
        if self.latched_status is not None:
            status, self.latched_status = self.latched_status, None
            return status
        latched = self.latched_count is not None
        value = self.latched_count if self.latched_count is not None else self.current_count(now)
        if self.access == ACCESS_WORD and not self.read_msb_next:
            self.read_msb_next = True
            return value & 0xFF  # a latch holds until its second byte is read
        self.read_msb_next = False
        if latched:
            self.latched_count = None
        return value & 0xFF if self.access == ACCESS_LSB else value >> 8


class Pit8254:
    """Three 8254 counters; channel 0 pulses `irq` (IRQ 0 on a PC)."""

    def __init__(self, irq: IrqLine | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._irq = irq if irq is not None else IrqLine()
        self._clock = clock
        now = clock()
        self._channels = [_Channel(state, now) for state in PitState().channels]

    # The bus interface: offsets 0-2 count registers, 3 control word. A wider
    # access is split into bytes to consecutive ports, as an ISA bus does.

    def read(self, offset: int, size: int) -> int:
        now = self._clock()
        value = 0
        for i in range(size):
            port = offset + i
            byte = self._channels[port].read_byte(now) if port < CONTROL else 0xFF
            value |= byte << (8 * i)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        now = self._clock()
        for i in range(size):
            port, byte = offset + i, (value >> (8 * i)) & 0xFF
            if port < CONTROL:
                self._deliver_before_change(port, now)
                self._channels[port].write_byte(byte, now)
            elif port == CONTROL:
                self._control(byte, now)

    def _control(self, value: int, now: float) -> None:
        select = value >> SELECT_SHIFT
        if select == READ_BACK:
            for index, channel in enumerate(self._channels):
                if value & (2 << index):
                    if not value & READ_BACK_NO_COUNT:
                        channel.latch_count(now)
                    if not value & READ_BACK_NO_STATUS:
                        channel.latch_status(now)
            return
        channel = self._channels[select]
        access = (value >> ACCESS_SHIFT) & 3
        if access == ACCESS_LATCH:
            channel.latch_count(now)
            return
        self._deliver_before_change(select, now)
        channel.control((value >> MODE_SHIFT) & 7, access, bool(value & CONTROL_BCD))

    def _deliver_before_change(self, index: int, now: float) -> None:
        """Edges that came due before a reprogramming happened before it."""
        if index == TIMER_CHANNEL:
            self.advance(now)

    # The machine's side.

    def set_gate(self, channel: int, level: bool) -> None:
        """Drive a channel's GATE input (channel 2's is port 0x61 bit 0)."""
        now = self._clock()
        self._deliver_before_change(channel, now)
        self._channels[channel].set_gate(level, now)

    def output(self, channel: int) -> bool:
        """The level of a channel's OUT pin now (channel 2's is port 0x61 bit 5)."""
        return self._channels[channel].output(self._clock())

    def next_deadline(self) -> float | None:
        """Clock time of the next IRQ 0 edge not yet delivered (it may be past
        when the machine is late), or None while channel 0 will raise none."""
        channel = self._channels[TIMER_CHANNEL]
        return channel.edge_time(channel.next_edge)

    def advance(self, now: float) -> int:
        """Deliver the IRQ 0 edges due up to `now`: one pulse however many came
        due (see the module notes). Returns how many came due."""
        due = self._channels[TIMER_CHANNEL].take_due(now)
        if due:
            self._irq.raise_()
            self._irq.lower()
        return due

    def state(self) -> PitState:
        now = self._clock()
        return PitState(tuple(channel.save(now) for channel in self._channels))

    def restore(self, state: PitState) -> None:
        if len(state.channels) != 3:
            raise ValueError(f"an 8254 has 3 channels, not {len(state.channels)}")
        now = self._clock()
        for channel, saved in zip(self._channels, state.channels, strict=True):
            channel.load(saved, now)
