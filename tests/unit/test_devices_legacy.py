from minikvm.devices import layout
from minikvm.devices.bus import Bus
from minikvm.devices.legacy import I8042, DebugExit, FastA20, NullDevice
from minikvm.stop import StopKind, StopReason


def machine() -> tuple[Bus, list[StopReason]]:
    """The legacy ports on a bus, where a guest reaches them."""
    stops: list[StopReason] = []
    bus = Bus()
    bus.register(*layout.FAST_A20, FastA20(stops.append), "fast-a20")
    bus.register(*layout.I8042, I8042(stops.append), "i8042")
    bus.register(*layout.DEBUG_EXIT, DebugExit(stops.append), "debug-exit")
    return bus, stops


def test_port_92_remembers_a20_and_resets_on_bit_0() -> None:
    bus, stops = machine()
    assert bus.read(0x92, 1) == 0x02  # A20 on
    bus.write(0x92, 1, 0x00)
    assert bus.read(0x92, 1) == 0x00
    bus.write(0x92, 1, 0x02)
    assert bus.read(0x92, 1) == 0x02
    assert stops == []
    bus.write(0x92, 1, 0x03)
    assert stops == [StopReason(StopKind.RESET, "reset through port 0x92")]
    assert stops[0].clean


def test_keyboard_controller_says_no_data_and_ready() -> None:
    bus, stops = machine()
    status = bus.read(0x64, 1)
    assert status & 0x01 == 0  # OBF: nothing to read at 0x60
    assert status & 0x02 == 0  # IBF: ready for a command
    assert status & 0x04  # system flag: self-test passed
    assert bus.read(0x60, 1) == 0
    bus.write(0x64, 1, 0xAA)  # self-test: answered by nothing, stops nothing
    assert bus.read(0x64, 1) & 0x08  # the last write was a command
    bus.write(0x60, 1, 0x00)
    assert not bus.read(0x64, 1) & 0x08
    assert stops == []


def test_keyboard_controller_reset_command() -> None:
    bus, stops = machine()
    bus.write(0x64, 1, 0xFE)
    assert stops == [StopReason(StopKind.RESET, "reset through the keyboard controller (0xfe)")]
    assert stops[0].clean


def test_port_61_inside_the_i8042_range_is_quiet() -> None:
    bus, stops = machine()
    bus.write(0x61, 1, 0xFE)
    assert bus.read(0x61, 1) == 0
    assert stops == [] and not bus.unclaimed


def test_debug_exit_zero_is_success() -> None:
    bus, stops = machine()
    bus.write(0xF4, 4, 0)
    assert stops[0].kind is StopKind.DEBUG_EXIT
    assert stops[0].exit_code == 0
    assert stops[0].clean and stops[0].status == 0


def test_debug_exit_nonzero_is_a_failure_carrying_the_code() -> None:
    bus, stops = machine()
    bus.write(0xF4, 1, 3)
    assert stops == [StopReason(StopKind.DEBUG_EXIT, "debug exit with code 3", exit_code=3)]
    assert not stops[0].clean and stops[0].status == 1


def test_null_device_reads_zero_and_ignores_writes() -> None:
    bus = Bus()
    bus.register(0x70, 2, NullDevice(), "cmos")
    bus.write(0x70, 1, 0x8F)
    assert bus.read(0x71, 1) == 0
    assert not bus.unclaimed
