"""The PC's two Intel 8259A programmable interrupt controllers.

A master (ports 0x20-0x21) takes IRQ 0-7; a slave (ports 0xA0-0xA1) takes
IRQ 8-15 and drives the master's IR2 input with its INT output, as on every PC
since the AT. Each chip has an offset 0 (command and status) and an offset 1
(data: the initialisation words ICW2-ICW4, then the mask register).

Used when the accelerator has no in-kernel PIC; the machine asks
`pending_vector()` whether INTR is up and `acknowledge()` to run the INTA
cycle. Names follow the Intel 8259A datasheet: IRR (requests), ISR (in
service), IMR (masks), ICW1-4 and OCW1-3.

Where this model departs from the chip, or the datasheet leaves room:

- The chip latches an edge-triggered request only while the line stays high
  until the acknowledge (otherwise it answers with a spurious IR7). Devices
  here *pulse* their lines (the PIT raises then lowers IRQ 0 within one call)
  and a model has no bus timing, so an edge stays latched in IRR after the
  line falls. In level mode IRR follows the line, and a request that vanishes
  before the acknowledge gives the spurious vector.
- During an INTA through the cascade the slave's INT output drops and is then
  recomputed, so a second request still waiting on the slave makes a fresh
  edge on IR2 instead of being lost behind the edge the master just took.
- The wiring is fixed (slave on IR2). ICW3 is remembered; the master uses the
  slave's vector for IR2 only while ICW3 bit 2 is set and ICW1.SNGL is clear,
  otherwise it answers IR2 itself; the slave's ICW3 identity is not checked.
- MCS-80/85 mode (ICW4.uPM clear, or no ICW4) is remembered but vectors are
  delivered as in 8086 mode: an x86 CPU cannot take a CALL opcode.
- ICW1 clears IRR and ISR as well as the IMR the datasheet lists, so a
  re-initialised chip starts with nothing in service.
- Buffered mode (ICW4.BUF, M/S) and ICW1.ADI have no effect.
- Rotation (OCW2 R bit), special fully nested mode, special mask mode and
  the poll command are implemented as the datasheet describes.

Thread safety: the UART may raise IRQ 4 from the console thread while the
vCPU thread touches registers, so every entry point takes one lock.
`on_change` runs outside it, on the thread that caused the change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields

CASCADE_IR = 2  # the master input the slave's INT drives
SPURIOUS_IR = 7  # the level a chip reports when a request vanished before INTA

# Before any ICW1 the chips are as a PC BIOS leaves them: vectors 0x08 and
# 0x70 (real-mode guests install handlers there), edge-triggered, cascaded,
# 8086 mode; timer, keyboard and cascade unmasked, everything else masked.
BIOS_MASTER_BASE = 0x08
BIOS_SLAVE_BASE = 0x70
BIOS_MASTER_IMR = 0xF8
BIOS_SLAVE_IMR = 0xFF

# ICW1 (command port, bit 4 set).
ICW1_IC4 = 0x01  # ICW4 follows
ICW1_SNGL = 0x02  # single chip: no ICW3
ICW1_LTIM = 0x08  # level-triggered inputs
ICW1_INIT = 0x10
# ICW4.
ICW4_8086 = 0x01
ICW4_AEOI = 0x02
ICW4_SFNM = 0x10
# OCW2 (command port, bits 4 and 3 clear): R, SL, EOI in bits 7-5, level in 2-0.
OCW2_EOI = 0x20
OCW2_SL = 0x40
OCW2_R = 0x80
# OCW3 (command port, bit 4 clear, bit 3 set).
OCW3_SELECT = 0x08
OCW3_RIS = 0x01  # with RR: read ISR instead of IRR
OCW3_RR = 0x02
OCW3_POLL = 0x04
OCW3_SMM = 0x20
OCW3_ESMM = 0x40  # SMM is only taken with this bit set
POLL_INTERRUPT = 0x80  # the poll byte: bit 7 set when a level was pending

COMMAND = 0  # port offsets within a chip
DATA = 1

# Which initialisation word the data port expects next.
READY = 0
WANT_ICW2 = 2
WANT_ICW3 = 3
WANT_ICW4 = 4


@dataclass(frozen=True)
class PicChipState:
    """One 8259A as a plain value. Bit n of a mask is input IRn."""

    vector_base: int = BIOS_MASTER_BASE
    imr: int = BIOS_MASTER_IMR
    irr: int = 0
    isr: int = 0
    lines: int = 0  # the input levels the devices drive now (edge detection)
    icw3: int = 1 << CASCADE_IR
    init_step: int = READY
    needs_icw4: bool = True
    single: bool = False
    level_triggered: bool = False
    mode_8086: bool = True
    auto_eoi: bool = False
    rotate_on_auto_eoi: bool = False
    special_fully_nested: bool = False
    special_mask: bool = False
    lowest_priority: int = 7  # IR(lowest + 1) mod 8 has the highest priority
    read_isr: bool = False  # OCW3: command-port reads return ISR, not IRR
    poll: bool = False  # OCW3 poll: the next command-port read is an acknowledge


def _bios_slave() -> PicChipState:
    return PicChipState(vector_base=BIOS_SLAVE_BASE, imr=BIOS_SLAVE_IMR, icw3=CASCADE_IR)


@dataclass(frozen=True)
class PicState:
    master: PicChipState = field(default_factory=PicChipState)
    slave: PicChipState = field(default_factory=_bios_slave)


class _Chip:
    """One 8259A, unlocked; the pair serialises access. Attributes are the
    fields of PicChipState."""

    vector_base: int
    imr: int
    irr: int
    isr: int
    lines: int
    icw3: int
    init_step: int
    needs_icw4: bool
    single: bool
    level_triggered: bool
    mode_8086: bool
    auto_eoi: bool
    rotate_on_auto_eoi: bool
    special_fully_nested: bool
    special_mask: bool
    lowest_priority: int
    read_isr: bool
    poll: bool

    def __init__(self, state: PicChipState) -> None:
        self.load(state)

    def load(self, state: PicChipState) -> None:
        for f in fields(PicChipState):
            setattr(self, f.name, getattr(state, f.name))

    def save(self) -> PicChipState:
        return PicChipState(**{f.name: getattr(self, f.name) for f in fields(PicChipState)})

    # Inputs.

    def set_line(self, ir: int, level: bool) -> None:
        bit = 1 << ir
        if level:
            if self.level_triggered or not self.lines & bit:
                self.irr |= bit
            self.lines |= bit
        else:
            self.lines &= ~bit
            if self.level_triggered:
                self.irr &= ~bit  # an edge stays latched; see the module notes

    # Priority resolution.

    def _priority(self, ir: int) -> int:
        """0 is the highest priority; rotation moves where 0 sits."""
        return (ir - self.lowest_priority - 1) % 8

    def _highest(self, mask: int) -> int | None:
        for step in range(8):
            ir = (self.lowest_priority + 1 + step) % 8
            if mask & (1 << ir):
                return ir
        return None

    def request(self, cascade_ir: int | None = None) -> int | None:
        """The IR the chip would assert INT for, or None (fully nested mode)."""
        ir = self._highest(self.irr & ~self.imr)
        if ir is None:
            return None
        blockers = self.isr
        if self.special_mask:
            # A masked level in service no longer holds off the others: that
            # is what special mask mode is for.
            blockers &= ~self.imr
        if self.special_fully_nested and ir == cascade_ir:
            # The slave may interrupt its own in-service request with a
            # higher one; the slave's own ISR decides.
            blockers &= ~(1 << ir)
        in_service = self._highest(blockers)
        if in_service is not None and self._priority(in_service) <= self._priority(ir):
            return None
        return ir

    def take(self, ir: int) -> None:
        """The INTA cycle for `ir`: IRR to ISR (not in auto-EOI mode)."""
        bit = 1 << ir
        self.irr &= ~bit
        if self.level_triggered and self.lines & bit:
            self.irr |= bit  # the input is still high
        if self.auto_eoi:
            if self.rotate_on_auto_eoi:
                self.lowest_priority = ir
        else:
            self.isr |= bit

    # Registers.

    def read(self, offset: int) -> int:
        if offset == DATA:
            return self.imr
        if self.poll:
            self.poll = False
            ir = self.request()
            if ir is None:
                return 0
            self.take(ir)
            return POLL_INTERRUPT | ir
        return self.isr if self.read_isr else self.irr

    def write(self, offset: int, value: int) -> None:
        if offset == COMMAND:
            if value & ICW1_INIT:
                self._icw1(value)
            elif value & OCW3_SELECT:
                self._ocw3(value)
            else:
                self._ocw2(value)
        elif self.init_step == WANT_ICW2:
            self.vector_base = value & 0xF8  # bits 2-0 become the IR number
            self.init_step = WANT_ICW3 if not self.single else self._after_icw3()
        elif self.init_step == WANT_ICW3:
            self.icw3 = value
            self.init_step = self._after_icw3()
        elif self.init_step == WANT_ICW4:
            self.mode_8086 = bool(value & ICW4_8086)
            self.auto_eoi = bool(value & ICW4_AEOI)
            self.special_fully_nested = bool(value & ICW4_SFNM)
            self.init_step = READY
        else:
            self.imr = value  # OCW1

    def _after_icw3(self) -> int:
        return WANT_ICW4 if self.needs_icw4 else READY

    def _icw1(self, value: int) -> None:
        self.init_step = WANT_ICW2
        self.needs_icw4 = bool(value & ICW1_IC4)
        self.single = bool(value & ICW1_SNGL)
        self.level_triggered = bool(value & ICW1_LTIM)
        if not self.needs_icw4:
            # Without ICW4 every ICW4 function is zero.
            self.mode_8086 = self.auto_eoi = self.special_fully_nested = False
        self.imr = self.isr = 0
        # The edge detectors restart: a line already high must fall and rise
        # again to request. In level mode the lines themselves are the requests.
        self.irr = self.lines if self.level_triggered else 0
        self.lowest_priority = 7
        self.special_mask = self.read_isr = self.poll = self.rotate_on_auto_eoi = False

    def _ocw2(self, value: int) -> None:
        command = value & (OCW2_R | OCW2_SL | OCW2_EOI)
        ir = value & 7
        if command & OCW2_EOI:
            if not command & OCW2_SL:
                found = self._highest(self.isr)  # non-specific: the highest in service
                if found is None:
                    return
                ir = found
            self.isr &= ~(1 << ir)
            if command & OCW2_R:
                self.lowest_priority = ir  # the level just served goes last
        elif command == OCW2_R | OCW2_SL:
            self.lowest_priority = ir  # set priority
        elif command == OCW2_R:
            self.rotate_on_auto_eoi = True
        elif command == 0:
            self.rotate_on_auto_eoi = False
        # OCW2_SL alone is the no-operation command.

    def _ocw3(self, value: int) -> None:
        if value & OCW3_ESMM:
            self.special_mask = bool(value & OCW3_SMM)
        if value & OCW3_RR:
            self.read_isr = bool(value & OCW3_RIS)
        self.poll = bool(value & OCW3_POLL)


class PicPorts:
    """One chip's two ports as a bus device: offset 0 command, 1 data.

    A wider access is split into byte accesses to consecutive ports, as an
    ISA bus does for an 8-bit chip; bytes past offset 1 read 0xFF.
    """

    def __init__(self, pair: Pic8259Pair, chip: _Chip) -> None:
        self._pair = pair
        self._chip = chip

    def read(self, offset: int, size: int) -> int:
        return self._pair._access(self._chip, offset, size, None)

    def write(self, offset: int, size: int, value: int) -> None:
        self._pair._access(self._chip, offset, size, value)


class Pic8259Pair:
    """A cascaded master/slave pair with IRQ 0-15 as its inputs."""

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        # Called, outside the lock and on the calling thread, when INTR rises
        # (goes from deasserted to asserted). While INTR stays up the machine
        # finds further requests through pending_vector().
        self.on_change = on_change
        self._lock = threading.Lock()
        initial = PicState()
        self._master = _Chip(initial.master)
        self._slave = _Chip(initial.slave)
        self._intr = False
        self.master_ports = PicPorts(self, self._master)
        self.slave_ports = PicPorts(self, self._slave)

    # The machine's side.

    def set_irq(self, irq: int, level: bool) -> None:
        """Drive input line `irq` (0-15) to `level`; safe from any thread."""
        if not 0 <= irq < 16:
            raise ValueError(f"IRQ {irq} does not exist on a PC's 8259A pair (0-15)")
        with self._lock:
            chip = self._slave if irq >= 8 else self._master
            chip.set_line(irq & 7, level)
            rose = self._settle()
        self._notify(rose)

    def pending_vector(self) -> int | None:
        """The vector an acknowledge now would return, or None while INTR is down."""
        with self._lock:
            ir = self._master.request(self._cascade_ir())
            if ir is None:
                return None
            if ir == self._cascade_ir():
                slave_ir = self._slave.request()
                return self._slave.vector_base | (SPURIOUS_IR if slave_ir is None else slave_ir)
            return self._master.vector_base | ir

    def acknowledge(self) -> int:
        """The INTA cycle: move the winning request to ISR and return its vector.

        With nothing pending (the request went away) the answer is the
        spurious IR7 vector of the master, or of the slave when the master
        had taken IR2; neither sets an ISR bit on the chip that answered it.
        """
        with self._lock:
            master, slave = self._master, self._slave
            ir = master.request(self._cascade_ir())
            if ir is None:
                vector = master.vector_base | SPURIOUS_IR
            else:
                master.take(ir)
                if ir == self._cascade_ir():
                    slave_ir = slave.request()
                    if slave_ir is None:
                        vector = slave.vector_base | SPURIOUS_IR
                    else:
                        slave.take(slave_ir)
                        vector = slave.vector_base | slave_ir
                    master.set_line(CASCADE_IR, False)  # INT drops during INTA
                else:
                    vector = master.vector_base | ir
            rose = self._settle()
        self._notify(rose)
        return vector

    def state(self) -> PicState:
        with self._lock:
            return PicState(self._master.save(), self._slave.save())

    def restore(self, state: PicState) -> None:
        with self._lock:
            self._master.load(state.master)
            self._slave.load(state.slave)
            self._intr = False  # a restored machine reports INTR afresh
            rose = self._settle()
        self._notify(rose)

    # Internals.

    def _access(self, chip: _Chip, offset: int, size: int, value: int | None) -> int:
        result = 0
        with self._lock:
            for i in range(size):
                port = offset + i
                if value is None:
                    byte = chip.read(port) if port in (COMMAND, DATA) else 0xFF
                    result |= byte << (8 * i)
                elif port in (COMMAND, DATA):
                    chip.write(port, (value >> (8 * i)) & 0xFF)
            rose = self._settle()
        self._notify(rose)
        return result

    def _cascade_ir(self) -> int | None:
        master = self._master
        if master.single or not master.icw3 & (1 << CASCADE_IR):
            return None
        return CASCADE_IR

    def _settle(self) -> bool:
        """Carry the slave's INT to master IR2 and recompute INTR; True when
        INTR has just risen. Call with the lock held."""
        self._master.set_line(CASCADE_IR, self._slave.request() is not None)
        intr = self._master.request(self._cascade_ir()) is not None
        rose = intr and not self._intr
        self._intr = intr
        return rose

    def _notify(self, rose: bool) -> None:
        callback = self.on_change
        if rose and callback is not None:
            callback()
