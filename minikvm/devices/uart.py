"""A 16550A UART (a PC COM port) as its driver sees it.

Eight byte registers at offsets 0-7, a 16-byte receive FIFO, one IRQ line.
Transmission is instantaneous: a byte written to THR goes straight to the
output callable, so THR and the transmitter are always empty.

Register and bit names follow the National Semiconductor PC16550D datasheet.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..stop import StopKind, StopReason, StopSink
from .input import EofWatch, InputBuffer
from .irq import IrqLine

# Register offsets; DLAB (LCR bit 7) turns offsets 0 and 1 into the divisor latch.
RBR = THR = DLL = 0
IER = DLH = 1
IIR = FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7

IER_ERBFI = 0x01  # received data available
IER_ETBEI = 0x02  # transmitter holding register empty
IER_ELSI = 0x04  # receiver line status
IER_EDSSI = 0x08  # modem status
IER_MASK = 0x0F

IIR_NO_INT = 0x01
IIR_MODEM_STATUS = 0x00
IIR_THRE = 0x02
IIR_RX_DATA = 0x04
IIR_LINE_STATUS = 0x06
IIR_RX_TIMEOUT = 0x0C
IIR_FIFOS_ENABLED = 0xC0

FCR_ENABLE = 0x01
FCR_CLEAR_RX = 0x02
FCR_TRIGGER = 0xC0  # receive trigger level, bits 6-7
RX_TRIGGER_LEVELS = (1, 4, 8, 14)

LCR_DLAB = 0x80

MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08  # on a PC, gates the IRQ line to the interrupt controller
MCR_LOOP = 0x10
MCR_MASK = 0x1F

LSR_DR = 0x01
LSR_OE = 0x02
LSR_THRE = 0x20
LSR_TEMT = 0x40

MSR_DCTS = 0x01
MSR_DDSR = 0x02
MSR_TERI = 0x04
MSR_DDCD = 0x08
MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80
# Outside loopback the lines read as a terminal that is attached and ready.
MSR_ATTACHED = MSR_CTS | MSR_DSR | MSR_DCD

FIFO_SIZE = 16


@dataclass(frozen=True)
class UartState:
    """Everything the guest can observe, as a plain value (reset values by default)."""

    dll: int = 0x0C  # divisor 12: 9600 baud from the 1.8432 MHz clock
    dlh: int = 0
    ier: int = 0
    lcr: int = 0
    mcr: int = 0
    scr: int = 0
    fcr: int = 0  # the FIFO enable and trigger bits last written (FCR is write-only)
    overrun: bool = False  # LSR.OE, latched until LSR is read
    msr_delta: int = 0  # MSR bits 0-3, latched until MSR is read
    thr_pending: bool = False  # the THR-empty interrupt, until IIR reports it or THR is written
    wants_input: bool = False  # the guest has read RBR or enabled the RX interrupt
    rx_fifo: bytes = b""


class Uart16550:
    """A 16550A UART.

    Safe to drive from two threads: the vCPU thread does register accesses,
    and `poll_input` may be called from the console thread when the input
    buffer gets data (an internal lock keeps the FIFO in order).
    """

    def __init__(
        self,
        output: Callable[[bytes], None],
        input: InputBuffer | None = None,
        irq: IrqLine | None = None,
        eof: EofWatch | None = None,
        stop: StopSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._output = output
        self._input = input
        self._irq = irq if irq is not None else IrqLine()
        self._eof = eof
        self._stop = stop
        self._clock = clock
        self._lock = threading.Lock()
        self._load(UartState())

    # The bus interface. A 2- or 4-byte access is split into byte accesses to
    # consecutive registers, as an ISA bus does for an 8-bit device.

    def read(self, offset: int, size: int) -> int:
        with self._lock:
            self._fill()
            value = 0
            for i in range(size):
                value |= self._read_register(offset + i) << (8 * i)
            self._settle()
            return value

    def write(self, offset: int, size: int, value: int) -> None:
        with self._lock:
            for i in range(size):
                self._write_register(offset + i, (value >> (8 * i)) & 0xFF)
            self._settle()

    def write_bytes(self, offset: int, data: bytes) -> None:
        """Several byte writes to one register, in order: the same as writing them one by one,
        with one output call for a run of transmitted bytes (KVM's coalesced writes arrive so)."""
        with self._lock:
            if offset == THR and not self._lcr & LCR_DLAB and not self._mcr & MCR_LOOP:
                self._output(bytes(data))
                if self._eof is not None:
                    self._eof.reset()
                self._thr_pending = True
            else:
                for value in data:
                    self._write_register(offset, value)
            self._settle()

    def poll_input(self) -> None:
        """Take newly arrived input into the FIFO and update the IRQ line."""
        with self._lock:
            self._settle()

    def state(self) -> UartState:
        with self._lock:
            return UartState(
                dll=self._dll,
                dlh=self._dlh,
                ier=self._ier,
                lcr=self._lcr,
                mcr=self._mcr,
                scr=self._scr,
                fcr=self._fcr,
                overrun=self._overrun,
                msr_delta=self._msr_delta,
                thr_pending=self._thr_pending,
                wants_input=self._wants_input,
                rx_fifo=bytes(self._rx),
            )

    def restore(self, state: UartState) -> None:
        with self._lock:
            self._load(state)
            self._settle()

    def _load(self, state: UartState) -> None:
        self._dll = state.dll
        self._dlh = state.dlh
        self._ier = state.ier
        self._lcr = state.lcr
        self._mcr = state.mcr
        self._scr = state.scr
        self._fcr = state.fcr
        self._overrun = state.overrun
        self._msr_delta = state.msr_delta
        self._thr_pending = state.thr_pending
        self._wants_input = state.wants_input
        self._rx: deque[int] = deque(state.rx_fifo)

    # Registers.

    def _read_register(self, offset: int) -> int:
        dlab = self._lcr & LCR_DLAB
        if offset == RBR:
            return self._dll if dlab else self._read_rbr()
        if offset == IER:
            return self._dlh if dlab else self._ier
        if offset == IIR:
            return self._read_iir()
        if offset == LCR:
            return self._lcr
        if offset == MCR:
            return self._mcr
        if offset == LSR:
            return self._read_lsr()
        if offset == MSR:
            return self._read_msr()
        if offset == SCR:
            return self._scr
        return 0xFF  # a wide access running past the last register reads open bus

    def _write_register(self, offset: int, value: int) -> None:
        dlab = self._lcr & LCR_DLAB
        if offset == THR:
            if dlab:
                self._dll = value
            else:
                self._write_thr(value)
        elif offset == IER:
            if dlab:
                self._dlh = value
            else:
                self._write_ier(value)
        elif offset == FCR:
            self._write_fcr(value)
        elif offset == LCR:
            self._lcr = value
        elif offset == MCR:
            self._write_mcr(value)
        elif offset == SCR:
            self._scr = value
        # LSR and MSR writes are factory-test features: ignored.

    def _read_rbr(self) -> int:
        self._wants_input = True
        if not self._rx:
            self._note_input_poll()
            return 0
        if self._eof is not None:
            self._eof.reset()
        return self._rx.popleft()

    def _write_thr(self, value: int) -> None:
        if self._mcr & MCR_LOOP:
            self._receive(value)
        else:
            self._output(bytes((value,)))
            if self._eof is not None:
                self._eof.reset()  # a guest still producing output is not stuck
        # Writing THR clears the THR-empty interrupt, but the byte leaves at
        # once and THR is empty again, which raises it anew.
        self._thr_pending = True

    def _write_ier(self, value: int) -> None:
        value &= IER_MASK
        if value & IER_ETBEI and not self._ier & IER_ETBEI:
            # THR is always empty, so enabling its interrupt fires it at once
            # (Linux's 8250 driver probes for exactly this).
            self._thr_pending = True
        if value & IER_ERBFI:
            self._wants_input = True
        self._ier = value

    def _read_iir(self) -> int:
        source = self._pending_interrupt()
        if source == IIR_THRE:
            self._thr_pending = False  # reading IIR acknowledges THR empty
        return source | (IIR_FIFOS_ENABLED if self._fcr & FCR_ENABLE else 0)

    def _write_fcr(self, value: int) -> None:
        was_enabled = self._fcr & FCR_ENABLE
        if not value & FCR_ENABLE:
            # The other bits only take with bit 0 set; turning the FIFOs off
            # empties them.
            if was_enabled:
                self._rx.clear()
            self._fcr = 0
            return
        # Clearing discards only what is already in the FIFO: input still in
        # the InputBuffer flows in afterwards, as if it arrived just then.
        if not was_enabled or value & FCR_CLEAR_RX:
            self._rx.clear()
        self._fcr = value & (FCR_ENABLE | FCR_TRIGGER)

    def _read_lsr(self) -> int:
        lsr = LSR_THRE | LSR_TEMT
        if self._rx:
            lsr |= LSR_DR
        elif self._wants_input:
            # A guest that only writes output reads LSR too, waiting for THRE,
            # so LSR reads count as input polls only from a guest that has
            # shown it wants input (read RBR, or enabled the RX interrupt).
            # Such a guest that is still writing is not stuck either: THR
            # writes reset the EofWatch.
            self._note_input_poll()
        if self._overrun:
            lsr |= LSR_OE
            self._overrun = False  # reading LSR clears the error bits
        return lsr

    def _write_mcr(self, value: int) -> None:
        old = self._modem_lines()
        self._mcr = value & MCR_MASK
        new = self._modem_lines()
        changed = old ^ new
        if changed & MSR_CTS:
            self._msr_delta |= MSR_DCTS
        if changed & MSR_DSR:
            self._msr_delta |= MSR_DDSR
        if old & MSR_RI and not new & MSR_RI:
            self._msr_delta |= MSR_TERI  # trailing edge only
        if changed & MSR_DCD:
            self._msr_delta |= MSR_DDCD

    def _read_msr(self) -> int:
        msr = self._modem_lines() | self._msr_delta
        self._msr_delta = 0
        return msr

    def _modem_lines(self) -> int:
        """MSR bits 4-7. In loopback they follow MCR's outputs (the probe
        Linux's 8250 driver runs relies on it)."""
        mcr = self._mcr
        if not mcr & MCR_LOOP:
            return MSR_ATTACHED
        lines = 0
        if mcr & MCR_RTS:
            lines |= MSR_CTS
        if mcr & MCR_DTR:
            lines |= MSR_DSR
        if mcr & MCR_OUT1:
            lines |= MSR_RI
        if mcr & MCR_OUT2:
            lines |= MSR_DCD
        return lines

    # Receive path and interrupts.

    def _capacity(self) -> int:
        return FIFO_SIZE if self._fcr & FCR_ENABLE else 1  # 16450 mode: RBR alone

    def _receive(self, byte: int) -> None:
        """A byte arrives at the receiver (in loopback, from the transmitter)."""
        if len(self._rx) < self._capacity():
            self._rx.append(byte)
            return
        self._overrun = True
        if not self._fcr & FCR_ENABLE:
            self._rx[-1] = byte  # without FIFO the new character overwrites RBR

    def _fill(self) -> None:
        """Move input into the FIFO while it has room; the rest waits in the
        InputBuffer, so a full FIFO never loses host input. In loopback the
        receiver is cut off from the outside, as on the chip."""
        if self._input is None or self._mcr & MCR_LOOP:
            return
        while len(self._rx) < self._capacity():
            byte = self._input.read_byte()
            if byte is None:
                return
            self._rx.append(byte)

    def _note_input_poll(self) -> None:
        """The guest asked for input and found none: stop it if the input has
        ended and it has kept asking past the grace period."""
        if self._eof is None or self._stop is None or self._input is None or self._mcr & MCR_LOOP:
            return
        if self._input.at_eof and self._eof.poll_empty(self._clock()):
            self._stop(StopReason(StopKind.INPUT_EOF, "waiting for input after end of input"))

    def _pending_interrupt(self) -> int:
        """The IIR interrupt identification, highest priority first."""
        ier = self._ier
        if ier & IER_ELSI and self._overrun:
            return IIR_LINE_STATUS
        if ier & IER_ERBFI and self._rx:
            # Below the trigger level the chip reports a character timeout
            # once four character times pass without a new byte; time is not
            # modelled, so the timeout is immediate.
            if self._fcr & FCR_ENABLE and len(self._rx) < RX_TRIGGER_LEVELS[self._fcr >> 6]:
                return IIR_RX_TIMEOUT
            return IIR_RX_DATA
        if ier & IER_ETBEI and self._thr_pending:
            return IIR_THRE
        if ier & IER_EDSSI and self._msr_delta:
            return IIR_MODEM_STATUS
        return IIR_NO_INT

    def _settle(self) -> None:
        """After any access: top up the FIFO, then drive the IRQ line. On a PC
        the line reaches the controller only through OUT2, and loopback
        disconnects the outputs, OUT2 included."""
        self._fill()
        gate = self._mcr & (MCR_OUT2 | MCR_LOOP) == MCR_OUT2
        self._irq.set(gate and self._pending_interrupt() != IIR_NO_INT)
