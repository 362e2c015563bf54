"""Exit dispatch as a pure function: synthetic exits in, devices and stop reasons out."""

from __future__ import annotations

from minikvm.debug.stats import ExitStats
from minikvm.devices.bus import Bus
from minikvm.kvm import uapi
from minikvm.kvm.exits import (
    FailEntryExit,
    HltExit,
    InternalErrorExit,
    InterruptedExit,
    IoExit,
    MmioExit,
    ShutdownExit,
    UnsupportedExit,
)
from minikvm.runloop import RunLoop
from minikvm.stop import StopKind


class FakeVcpu:
    """Replays a list of exits (or calls that make one); records what the loop hands back to the 'CPU'."""

    def __init__(self, exits: list, rflags: int = 0x2) -> None:
        self.exits = list(exits)
        self.regs = uapi.kvm_regs(rflags=rflags)
        self.io_in: list[bytes] = []
        self.mmio_in: list[bytes] = []
        self.ring: list[tuple[int, bool, bytes]] = []
        self.exit_requested = False

    def run(self):
        exit = self.exits.pop(0)
        return exit() if callable(exit) else exit

    def exit_regs(self) -> uapi.kvm_regs:
        return self.regs

    def complete_io_in(self, exit: IoExit, data: bytes) -> None:
        self.io_in.append(data)

    def complete_mmio_read(self, data: bytes) -> None:
        self.mmio_in.append(data)

    def drain_coalesced(self) -> list[tuple[int, bool, bytes]]:
        entries, self.ring = self.ring, []
        return entries

    def request_exit(self) -> None:
        self.exit_requested = True


class Recorder:
    def __init__(self, value: int = 0x5A) -> None:
        self.writes: list[tuple[int, int, int]] = []
        self.value = value

    def read(self, offset: int, size: int) -> int:
        return self.value + offset

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))


def make_loop(exits: list, rflags: int = 0x2) -> tuple[RunLoop, FakeVcpu, Recorder]:
    vcpu = FakeVcpu(exits, rflags)
    bus = Bus()
    device = Recorder()
    bus.register(0x3F8, 8, device, "uart")
    return RunLoop(vcpu, bus, ExitStats()), vcpu, device


def test_out_then_hlt() -> None:
    loop, _, device = make_loop([IoExit(0x3F9, 1, 1, True, b"\x41"), HltExit()])
    stop = loop.run()
    assert device.writes == [(1, 1, 0x41)]
    assert stop.kind is StopKind.HALT and stop.clean
    assert loop.stats.exits == 2 and loop.stats.by_port[0x3F9, "out"] == 1


def test_rep_outs_writes_every_element_in_order() -> None:
    loop, _, device = make_loop([IoExit(0x3F8, 2, 3, True, bytes.fromhex("010002000300"))])
    assert loop.dispatch(loop.vcpu.run()) is None
    assert device.writes == [(0, 2, 1), (0, 2, 2), (0, 2, 3)]


def test_in_answers_through_the_vcpu() -> None:
    loop, vcpu, _ = make_loop([IoExit(0x3FD, 1, 2, False)])
    loop.dispatch(vcpu.run())
    assert vcpu.io_in == [bytes([0x5A + 5, 0x5A + 5])]


def test_unclaimed_in_reads_all_ones_and_is_counted() -> None:
    loop, vcpu, _ = make_loop([IoExit(0x1234, 2, 1, False)])
    loop.dispatch(vcpu.run())
    assert vcpu.io_in == [b"\xff\xff"]
    assert loop.ports.unclaimed[0x1234, "read"] == 1


def test_coalesced_writes_reach_the_device_before_the_exit_that_followed() -> None:
    loop, vcpu, device = make_loop([IoExit(0x3FB, 1, 1, True, b"\x03"), HltExit()])
    vcpu.ring = [(0x3F8, True, b"H"), (0x3F8, True, b"i")]
    loop.run()
    assert device.writes == [(0, 1, ord("H")), (0, 1, ord("i")), (3, 1, 3)]
    assert loop.stats.coalesced == 2


def test_hlt_with_interrupts_enabled_says_nothing_can_wake_it() -> None:
    loop, _, _ = make_loop([HltExit()], rflags=0x202)
    stop = loop.run()
    assert stop.kind is StopKind.HALT and "interrupts enabled" in stop.message


def test_abnormal_exits_map_to_stop_kinds() -> None:
    cases = [
        (ShutdownExit(), StopKind.TRIPLE_FAULT),
        (InternalErrorExit(1, (), None), StopKind.INTERNAL_ERROR),
        (FailEntryExit(0x21, 0), StopKind.FAIL_ENTRY),
        (UnsupportedExit(29, "X86_RDMSR"), StopKind.UNHANDLED_EXIT),
    ]
    for exit, kind in cases:
        loop, _, _ = make_loop([exit])
        stop = loop.run()
        assert stop.kind is kind and not stop.clean, exit
    loop, _, _ = make_loop([UnsupportedExit(29, "X86_RDMSR")])
    assert "X86_RDMSR" in loop.run().message


def test_mmio_read_to_nowhere_reads_all_ones() -> None:
    loop, vcpu, _ = make_loop([MmioExit(0xFEE00000, 4, False, b"")])
    assert loop.dispatch(vcpu.run()) is None
    assert vcpu.mmio_in == [b"\xff" * 4] and loop.unclaimed_mmio == 1


def test_stop_request_from_a_device_ends_the_loop_and_first_reason_wins() -> None:
    loop, vcpu, _ = make_loop([InterruptedExit(), HltExit()])
    from minikvm.stop import StopReason

    loop.request_stop(StopReason(StopKind.TIMEOUT, "timed out"))
    loop.request_stop(StopReason(StopKind.INTERRUPTED, "later"))
    assert vcpu.exit_requested
    assert loop.run().kind is StopKind.TIMEOUT
    assert vcpu.exits == [InterruptedExit(), HltExit()]  # the loop never entered the guest again


def test_the_run_that_ends_only_because_of_a_stop_is_not_counted_as_an_exit() -> None:
    from minikvm.stop import StopReason

    def stop_while_running() -> InterruptedExit:  # a timeout lands, the vCPU is kicked out of its run
        loop.request_stop(StopReason(StopKind.TIMEOUT, "timed out"))
        return InterruptedExit()

    loop, _, _ = make_loop([IoExit(0x3F8, 1, 1, True, b"A"), stop_while_running])
    assert loop.run().kind is StopKind.TIMEOUT
    assert loop.stats.exits == 1 and dict(loop.stats.by_reason) == {"IoExit": 1}


def test_trace_gets_one_line_per_exit() -> None:
    lines: list[str] = []
    loop, _, _ = make_loop([IoExit(0x3F8, 1, 1, True, b"A"), HltExit()])
    loop.trace = lines.append
    loop.run()
    assert lines == ["exit IO out port=0x03f8 size=1 value=0x41", "exit HltExit"]
