"""The 16550A driven register by register, as a guest's driver would."""

from __future__ import annotations

from minikvm.devices.input import EofWatch, InputBuffer
from minikvm.devices.irq import IrqLine
from minikvm.devices.uart import (
    DLH,
    DLL,
    FCR,
    IER,
    IIR,
    LCR,
    LSR,
    MCR,
    MSR,
    RBR,
    SCR,
    THR,
    Uart16550,
    UartState,
)
from minikvm.stop import StopKind, StopReason

# Values a driver writes, spelled out as in a driver.
LCR_8N1 = 0x03
LCR_DLAB = 0x80
FCR_FIFO_ON = 0x01
FCR_CLEAR_RX = 0x02
FCR_TRIGGER_4 = 0x40
IER_RX = 0x01
IER_TX = 0x02
IER_LINE = 0x04
IER_MODEM = 0x08
MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08
MCR_LOOP = 0x10
LSR_DR = 0x01
LSR_OE = 0x02
LSR_IDLE = 0x60  # THRE | TEMT
IIR_NONE = 0x01


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """A UART with its wiring exposed: output, input, IRQ edges, stops."""

    def __init__(self, grace: float = 0.5) -> None:
        self.out: list[bytes] = []
        self.edges: list[bool] = []
        self.stops: list[StopReason] = []
        self.input = InputBuffer()
        self.clock = Clock()
        self.uart = Uart16550(
            self.out.append,
            self.input,
            IrqLine(self.edges.append),
            EofWatch(grace),
            self.stops.append,
            self.clock,
        )
        self.input.on_data = self.uart.poll_input

    def inb(self, offset: int) -> int:
        return self.uart.read(offset, 1)

    def outb(self, offset: int, value: int) -> None:
        self.uart.write(offset, 1, value)

    def putc(self, byte: int) -> None:
        while not self.inb(LSR) & 0x20:
            pass
        self.outb(THR, byte)

    def getc(self) -> int | None:
        return self.inb(RBR) if self.inb(LSR) & LSR_DR else None

    def read_all(self) -> bytes:
        got = bytearray()
        while (byte := self.getc()) is not None:
            got.append(byte)
        return bytes(got)


def test_divisor_latch_is_behind_dlab() -> None:
    rig = Rig()
    rig.outb(LCR, LCR_DLAB | LCR_8N1)
    rig.outb(DLL, 0x01)  # 115200 baud
    rig.outb(DLH, 0x00)
    assert (rig.inb(DLL), rig.inb(DLH)) == (0x01, 0x00)
    rig.outb(LCR, LCR_8N1)
    assert rig.inb(LCR) == LCR_8N1
    assert rig.inb(IER) == 0  # the divisor writes did not land in IER
    assert rig.out == []  # ... nor in THR
    rig.outb(LCR, LCR_DLAB)
    assert rig.inb(DLL) == 0x01


def test_output_goes_out_in_order_and_lsr_is_always_ready() -> None:
    rig = Rig()
    assert rig.inb(LSR) == LSR_IDLE
    for byte in b"Hello, KVM!\n":
        rig.putc(byte)
    assert b"".join(rig.out) == b"Hello, KVM!\n"
    assert rig.inb(LSR) == LSR_IDLE


def test_scratch_and_ier_read_back_like_the_linux_probe_expects() -> None:
    rig = Rig()
    rig.outb(SCR, 0xA5)
    assert rig.inb(SCR) == 0xA5
    rig.outb(IER, 0x00)
    assert rig.inb(IER) & 0x0F == 0
    rig.outb(IER, 0xFF)
    assert rig.inb(IER) == 0x0F  # bits 4-7 do not exist on a 16550A


def test_fifo_bits_in_iir_identify_a_16550a() -> None:
    rig = Rig()
    assert rig.inb(IIR) >> 6 == 0
    rig.outb(FCR, FCR_FIFO_ON)
    assert rig.inb(IIR) >> 6 == 3
    rig.outb(FCR, 0)
    assert rig.inb(IIR) == IIR_NONE


def test_loopback_probe() -> None:
    rig = Rig()
    rig.outb(MCR, MCR_LOOP | MCR_OUT2 | MCR_RTS)
    assert rig.inb(MSR) & 0xF0 == 0x90  # DCD (from OUT2) | CTS (from RTS)
    rig.outb(MCR, MCR_LOOP | 0x0F)
    assert rig.inb(MSR) & 0xF0 == 0xF0
    rig.input.feed(b"host")  # the receiver is cut off from the outside
    rig.outb(THR, 0x55)
    assert rig.inb(LSR) & LSR_DR
    assert rig.inb(RBR) == 0x55
    assert not rig.inb(LSR) & LSR_DR
    assert rig.out == []  # looped back, not sent
    rig.outb(MCR, MCR_OUT2)
    assert rig.read_all() == b"host"


def test_modem_lines_read_as_an_attached_terminal_outside_loopback() -> None:
    rig = Rig()
    assert rig.inb(MSR) == 0xB0  # DCD | DSR | CTS, no changes


def test_modem_status_deltas_latch_until_msr_is_read() -> None:
    rig = Rig()
    rig.outb(MCR, MCR_LOOP | MCR_OUT1)  # CTS, DSR, DCD fall; RI rises
    assert rig.inb(MSR) == 0x40 | 0x01 | 0x02 | 0x08  # RI; DCTS, DDSR, DDCD
    assert rig.inb(MSR) == 0x40
    rig.outb(MCR, MCR_LOOP)  # RI falls: the trailing edge
    assert rig.inb(MSR) == 0x04
    rig.outb(MCR, MCR_LOOP | MCR_OUT1)  # RI rises: no TERI
    assert rig.inb(MSR) == 0x40


def test_receive_fifo_holds_16_and_the_rest_waits_in_order() -> None:
    rig = Rig()
    rig.outb(FCR, FCR_FIFO_ON)
    data = bytes(range(100))
    assert rig.input.feed(data) == 100
    assert len(rig.uart.state().rx_fifo) == 16
    assert rig.input.pending == 84
    assert rig.read_all() == data


def test_without_fifo_the_receiver_holds_one_byte() -> None:
    rig = Rig()
    rig.input.feed(b"abc")
    assert rig.uart.state().rx_fifo == b"a"
    assert rig.read_all() == b"abc"


def test_fifo_clear_drops_only_what_the_fifo_held() -> None:
    rig = Rig()
    rig.outb(FCR, FCR_FIFO_ON)
    rig.input.feed(bytes(range(20)))
    rig.outb(FCR, FCR_FIFO_ON | FCR_CLEAR_RX)
    assert rig.read_all() == bytes(range(16, 20))


def test_overrun_in_fifo_mode_keeps_the_fifo_and_latches_oe() -> None:
    rig = Rig()
    rig.outb(FCR, FCR_FIFO_ON)
    rig.outb(MCR, MCR_LOOP)
    for byte in range(17):
        rig.outb(THR, byte)
    assert rig.inb(LSR) == LSR_IDLE | LSR_OE | LSR_DR
    assert rig.inb(LSR) == LSR_IDLE | LSR_DR  # reading LSR cleared OE
    assert rig.read_all() == bytes(range(16))


def test_overrun_without_fifo_overwrites_rbr() -> None:
    rig = Rig()
    rig.outb(MCR, MCR_LOOP)
    rig.outb(THR, ord("a"))
    rig.outb(THR, ord("b"))
    assert rig.inb(LSR) & LSR_OE
    assert rig.read_all() == b"b"


def test_empty_rbr_reads_zero() -> None:
    assert Rig().inb(RBR) == 0


def test_iir_reports_the_highest_priority_source_and_clears_as_the_datasheet_says() -> None:
    rig = Rig()
    rig.outb(MCR, MCR_LOOP)  # also sets modem deltas: CTS, DSR, DCD fall
    rig.outb(THR, 1)
    rig.outb(THR, 2)  # overrun: no FIFO
    rig.outb(IER, IER_RX | IER_TX | IER_LINE | IER_MODEM)
    assert rig.inb(IIR) == 0x06  # line status
    rig.inb(LSR)
    assert rig.inb(IIR) == 0x04  # received data
    rig.inb(RBR)
    assert rig.inb(IIR) == 0x02  # THR empty; reading IIR acknowledges it
    assert rig.inb(IIR) == 0x00  # modem status
    rig.inb(MSR)
    assert rig.inb(IIR) == IIR_NONE


def test_below_the_trigger_level_data_shows_as_character_timeout() -> None:
    rig = Rig()
    rig.outb(FCR, FCR_FIFO_ON | FCR_TRIGGER_4)
    rig.outb(IER, IER_RX)
    rig.input.feed(b"ab")
    assert rig.inb(IIR) == 0xCC
    rig.input.feed(b"cd")
    assert rig.inb(IIR) == 0xC4
    assert rig.read_all() == b"abcd"
    assert rig.inb(IIR) == 0xC1


def test_thr_empty_interrupt_fires_on_enable_and_after_each_write() -> None:
    rig = Rig()
    rig.outb(IER, IER_TX)
    assert rig.inb(IIR) == 0x02
    assert rig.inb(IIR) == IIR_NONE  # acknowledged by the read
    rig.outb(IER, IER_TX)  # already enabled: no new edge
    assert rig.inb(IIR) == IIR_NONE
    rig.outb(THR, ord("x"))
    assert rig.inb(IIR) == 0x02
    rig.outb(IER, 0)
    rig.outb(IER, IER_TX)  # Linux's UART_BUG_THRE probe: re-enabling fires again
    assert rig.inb(IIR) == 0x02


def test_irq_line_needs_out2_and_changes_only_on_edges() -> None:
    rig = Rig()
    rig.outb(IER, IER_RX)
    rig.input.feed(b"k")
    assert rig.edges == []  # OUT2 clear: the PC's IRQ gate is shut
    rig.outb(MCR, MCR_OUT2 | MCR_RTS | MCR_DTR)
    assert rig.edges == [True]
    rig.inb(LSR)
    rig.inb(IIR)
    assert rig.edges == [True]
    assert rig.inb(RBR) == ord("k")
    assert rig.edges == [True, False]
    rig.input.feed(b"l")  # new input raises the line with no guest access
    assert rig.edges == [True, False, True]


def test_irq_follows_thr_empty_through_a_transmit_cycle() -> None:
    rig = Rig()
    rig.outb(MCR, MCR_OUT2)
    rig.outb(IER, IER_TX)
    assert rig.edges == [True]
    assert rig.inb(IIR) == 0x02
    assert rig.edges == [True, False]
    rig.outb(THR, ord("a"))
    assert rig.edges == [True, False, True]
    rig.outb(IER, 0)  # the driver has nothing more to send
    assert rig.edges == [True, False, True, False]


def test_loopback_disconnects_the_irq_line() -> None:
    rig = Rig()
    rig.outb(IER, IER_TX)
    rig.outb(MCR, MCR_OUT2 | MCR_LOOP)
    assert rig.edges == []
    rig.outb(MCR, MCR_OUT2)
    assert rig.edges == [True]


def test_wide_accesses_split_into_consecutive_registers() -> None:
    rig = Rig()
    rig.outb(SCR, 0x5A)
    assert rig.uart.read(MSR, 2) == 0xB0 | 0x5A << 8
    rig.uart.write(THR, 2, 0x0141)  # 'A' to THR, then 0x01 to IER
    assert rig.out == [b"A"]
    assert rig.inb(IER) == IER_RX
    assert rig.uart.read(SCR, 2) == 0xFF5A  # past the last register: open bus


def stuck_poller(rig: Rig, register: int, seconds: float) -> None:
    for _ in range(int(seconds * 100)):
        rig.clock.now += 0.01
        rig.inb(register)


def test_guest_reading_rbr_after_end_of_input_is_stopped_after_the_grace() -> None:
    rig = Rig()
    rig.input.feed(b"y")
    rig.input.close()
    assert rig.getc() == ord("y")
    stuck_poller(rig, RBR, 0.4)
    assert rig.stops == []
    stuck_poller(rig, RBR, 0.2)
    assert rig.stops
    assert rig.stops[0] == StopReason(StopKind.INPUT_EOF, "waiting for input after end of input")


def test_guest_polling_lsr_for_input_is_stopped_once_it_has_asked_for_input() -> None:
    rig = Rig()
    rig.input.close()
    stuck_poller(rig, LSR, 2.0)
    assert rig.stops == []  # it never asked for input: LSR reads wait for THRE
    rig.outb(IER, IER_RX)
    stuck_poller(rig, LSR, 0.6)
    assert [stop.kind for stop in rig.stops[:1]] == [StopKind.INPUT_EOF]


def test_guest_still_writing_output_is_not_stopped() -> None:
    rig = Rig()
    rig.input.close()
    assert rig.inb(RBR) == 0  # it did ask for input once
    for _ in range(300):
        rig.clock.now += 0.01
        assert not rig.inb(LSR) & LSR_DR  # checks for a key ...
        rig.putc(ord("."))  # ... and goes on printing
    assert rig.stops == []


def test_guest_waiting_for_input_that_is_still_open_is_never_stopped() -> None:
    rig = Rig()
    rig.inb(RBR)
    stuck_poller(rig, LSR, 5.0)
    assert rig.stops == []


def test_state_round_trips_and_restores_the_irq_line() -> None:
    rig = Rig()
    rig.outb(LCR, LCR_DLAB)
    rig.outb(DLL, 0x03)
    rig.outb(LCR, LCR_8N1)
    rig.outb(FCR, FCR_FIFO_ON | FCR_TRIGGER_4)
    rig.outb(MCR, MCR_OUT2 | MCR_DTR)
    rig.outb(IER, IER_RX | IER_MODEM)
    rig.outb(SCR, 0x42)
    rig.input.feed(b"xyz")
    state = rig.uart.state()
    assert state.rx_fifo == b"xyz"
    assert rig.edges == [True]

    edges: list[bool] = []
    twin = Uart16550(lambda data: None, irq=IrqLine(edges.append))
    twin.restore(state)
    assert twin.state() == state
    assert edges == [True]
    assert twin.read(IIR, 1) == rig.inb(IIR) == 0xCC
    assert twin.read(RBR, 1) == ord("x")

    twin.restore(UartState())
    assert edges == [True, False]
    assert twin.read(LSR, 1) == LSR_IDLE
