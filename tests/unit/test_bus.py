import pytest

from minikvm.devices.bus import Bus, BusOverlapError
from minikvm.errors import MinikvmError


class Recorder:
    """A device that remembers what reached it and answers with a fixed value."""

    def __init__(self, value: int = 0) -> None:
        self.value = value
        self.reads: list[tuple[int, int]] = []
        self.writes: list[tuple[int, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        self.reads.append((offset, size))
        return self.value

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))


def test_accesses_reach_the_device_with_offsets_from_its_base() -> None:
    bus = Bus()
    com1 = Recorder(0x60)
    bus.register(0x3F8, 8, com1, "com1")
    assert bus.read(0x3FD, 1) == 0x60
    bus.write(0x3F8, 1, ord("A"))
    bus.write(0x3FF, 2, 0x1234)
    assert com1.reads == [(5, 1)]
    assert com1.writes == [(0, 1, 0x41), (7, 2, 0x1234)]


def test_device_values_are_cut_to_the_access_size() -> None:
    bus = Bus()
    bus.register(0x80, 1, Recorder(0x1_2345_6789), "wide")
    assert bus.read(0x80, 1) == 0x89
    assert bus.read(0x80, 2) == 0x6789
    assert bus.read(0x80, 4) == 0x2345_6789


def test_adjacent_ranges_are_fine() -> None:
    bus = Bus()
    bus.register(0x60, 5, Recorder(), "i8042")
    bus.register(0x65, 1, Recorder(), "after")
    bus.register(0x5F, 1, Recorder(), "before")
    assert bus.devices() == [(0x5F, 1, "before"), (0x60, 5, "i8042"), (0x65, 1, "after")]


@pytest.mark.parametrize(
    ("base", "length"),
    [(0x3F8, 8), (0x3F0, 9), (0x3FF, 1), (0x3FA, 2), (0x3F0, 0x20)],
)
def test_overlapping_ranges_are_refused_naming_both(base: int, length: int) -> None:
    bus = Bus()
    bus.register(0x3F8, 8, Recorder(), "com1")
    with pytest.raises(BusOverlapError) as caught:
        bus.register(base, length, Recorder(), "intruder")
    error = caught.value
    assert isinstance(error, MinikvmError)
    assert "intruder" in str(error) and "com1" in str(error)
    assert "0x3f8-0x3ff" in str(error)
    assert (error.name, error.base, error.length) == ("intruder", base, length)
    assert (error.other_name, error.other_base, error.other_length) == ("com1", 0x3F8, 8)
    assert bus.devices() == [(0x3F8, 8, "com1")]  # the refused range left no trace


def test_refused_range_does_not_steal_addresses() -> None:
    bus = Bus()
    com1 = Recorder(7)
    bus.register(0x3F8, 8, com1, "com1")
    with pytest.raises(BusOverlapError):
        bus.register(0x3F0, 0x10, Recorder(9), "intruder")
    assert bus.read(0x3F8, 1) == 7
    assert bus.read(0x3F0, 1) == 0xFF  # still unclaimed


@pytest.mark.parametrize("length", [0, -1])
def test_empty_ranges_are_refused(length: int) -> None:
    with pytest.raises(ValueError, match="length"):
        Bus().register(0x80, length, Recorder(), "post")


def test_unclaimed_reads_float_high_and_are_counted() -> None:
    bus = Bus()
    assert bus.read(0x2F8, 1) == 0xFF
    assert bus.read(0x2F8, 2) == 0xFFFF
    assert bus.read(0xCF8, 4) == 0xFFFF_FFFF
    bus.write(0x2F8, 1, 0x41)
    bus.write(0x2F8, 1, 0x42)
    assert bus.unclaimed == {(0x2F8, "read"): 2, (0xCF8, "read"): 1, (0x2F8, "write"): 2}


def test_claimed_accesses_are_not_counted() -> None:
    bus = Bus()
    bus.register(0x92, 1, Recorder(), "fast-a20")
    bus.read(0x92, 1)
    bus.write(0x92, 1, 2)
    assert not bus.unclaimed
