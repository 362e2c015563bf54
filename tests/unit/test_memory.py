"""GuestMemory: every access path is bounds-checked and errors carry address and length."""

from __future__ import annotations

import pytest

from minikvm.memory import GuestMemory, GuestMemoryAllocationError, GuestMemoryError


@pytest.fixture
def memory() -> GuestMemory:
    mem = GuestMemory([(0, 0x2000), (0x10000, 0x1000)])
    yield mem
    mem.close()


def test_round_trip_and_typed_accessors(memory: GuestMemory) -> None:
    memory.write(0x100, b"minikvm")
    assert memory.read(0x100, 7) == b"minikvm"
    memory.write_u32(0x10010, 0xDEADBEEF)
    assert memory.read_u32(0x10010) == 0xDEADBEEF
    assert memory.read(0x10010, 4) == bytes.fromhex("efbeadde")  # little-endian
    memory.write_u64(0x1FF8, 0x0102030405060708)
    assert memory.read_u16(0x1FF8) == 0x0708
    assert memory.read_u8(0x1FFF) == 0x01


@pytest.mark.parametrize(("addr", "length"), [
    (0x2000, 1),  # the first byte after region 0 (a hole)
    (0x1FFF, 2),  # straddles the end of region 0
    (0xFFFF, 2),  # starts in the hole, ends in region 1
    (0x11000, 1),  # past the last region
    (-1, 1),
    (0x0, -1),
    (1 << 64, 4),
])
def test_out_of_range_accesses_raise_with_facts(memory: GuestMemory, addr: int, length: int) -> None:
    with pytest.raises(GuestMemoryError) as info:
        memory.read(addr, length)
    assert (info.value.addr, info.value.length) == (addr, length)
    if length > 0:
        with pytest.raises(GuestMemoryError):
            memory.write(addr, b"\0" * length)


def test_typed_writes_are_checked_too(memory: GuestMemory) -> None:
    with pytest.raises(GuestMemoryError) as info:
        memory.write_u64(0x1FFC, 0)
    assert info.value.addr == 0x1FFC and info.value.length == 8


def test_contains(memory: GuestMemory) -> None:
    assert memory.contains(0x1FFF) and not memory.contains(0x1FFF, 2) and memory.contains(0x10000, 0x1000)


def test_regions_are_validated() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        GuestMemory([(0, 0x2000), (0x1000, 0x1000)])
    with pytest.raises(ValueError, match="aligned"):
        GuestMemory([(0, 0x1001)])


def test_allocation_failure_is_a_clear_error() -> None:
    with pytest.raises(GuestMemoryAllocationError, match="cannot allocate"):
        GuestMemory([(0, 1 << 62)])


def test_host_addresses_are_distinct_and_stable(memory: GuestMemory) -> None:
    first, second = memory.regions
    assert first.host_addr != second.host_addr and first.host_addr % 4096 == 0
    assert memory.size == 0x3000
