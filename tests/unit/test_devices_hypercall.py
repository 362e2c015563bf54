import pytest

from minikvm.devices.hypercall import Hypercall, HypercallPort
from minikvm.devices.input import EofWatch, InputBuffer
from minikvm.stop import StopKind, StopReason


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.stops: list[StopReason] = []
        self.input = InputBuffer()
        self.clock = Clock()
        self.port = HypercallPort(self.out.append, self.stops.append, self.input, EofWatch(0.5), self.clock)

    def getchar(self) -> int:
        """OUT 0x500 with AL=2, then IN AL, 0x500, as a guest polls."""
        self.port.call(Hypercall.GETCHAR, 0)
        return self.port.read(0, 1)


def test_exit_stops_cleanly() -> None:
    rig = Rig()
    rig.port.call(Hypercall.EXIT, 0)
    assert rig.stops == [StopReason(StopKind.EXIT_HYPERCALL, "exit hypercall")]
    assert rig.stops[0].clean


def test_putchar_writes_bl() -> None:
    rig = Rig()
    for byte in b"Hi\n":
        rig.port.call(Hypercall.PUTCHAR, 0x1200 | byte)  # only BL counts
    assert rig.out == [b"H", b"i", b"\n"]
    assert rig.stops == []


def test_getchar_reads_back_once() -> None:
    rig = Rig()
    rig.input.feed(b"ok")
    assert rig.getchar() == ord("o")
    assert rig.port.read(0, 1) == 0  # consumed by the first IN
    assert rig.getchar() == ord("k")


def test_getchar_without_input_answers_ff() -> None:
    rig = Rig()
    assert rig.getchar() == 0xFF
    no_input = HypercallPort(lambda data: None, lambda reason: None)
    no_input.call(Hypercall.GETCHAR, 0)
    assert no_input.read(0, 1) == 0xFF


def test_in_without_getchar_reads_zero() -> None:
    assert Rig().port.read(0, 1) == 0


def test_unknown_number_stops_naming_it() -> None:
    rig = Rig()
    rig.port.call(0x7F, 0)
    assert rig.stops == [StopReason(StopKind.UNKNOWN_HYPERCALL, "unknown hypercall 0x7f")]
    assert not rig.stops[0].clean


def test_calls_are_counted_by_number() -> None:
    rig = Rig()
    for number in (1, 1, 2, 9):
        rig.port.call(number, 0)
    assert rig.port.calls == {Hypercall.PUTCHAR: 2, Hypercall.GETCHAR: 1, 9: 1}


def test_polling_after_end_of_input_stops_after_the_grace() -> None:
    rig = Rig()
    rig.input.feed(b"1")
    rig.input.close()
    assert rig.getchar() == ord("1")
    while not rig.stops and rig.clock.now < 1.0:
        rig.clock.now += 0.01
        assert rig.getchar() == 0xFF
    assert rig.stops == [StopReason(StopKind.INPUT_EOF, "guest is waiting for input that will never come")]
    assert rig.clock.now == pytest.approx(0.51)


def test_polling_open_input_never_stops() -> None:
    rig = Rig()
    for _ in range(500):
        rig.clock.now += 0.01
        rig.getchar()
    assert rig.stops == []


def test_a_plain_port_write_is_refused() -> None:
    with pytest.raises(NotImplementedError, match="call"):
        Rig().port.write(0, 1, Hypercall.PUTCHAR)
