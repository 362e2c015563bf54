"""A bus routes guest port accesses to the device that claims the address.

One bus per address space. Ranges never overlap; every address of a range is
entered in a dict at registration, so dispatch on each exit is one lookup.
That suits the 64 KiB port space; an MMIO bus would want a range search.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Protocol

from ..errors import MinikvmError

_ALL_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF}


class PortDevice(Protocol):
    """A device as the bus sees it: offsets from its own base, never addresses.

    `size` is 1, 2 or 4 bytes; values are little-endian, as the CPU moves them.
    """

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


def _span(base: int, length: int) -> str:
    return f"{base:#x}-{base + length - 1:#x}"


class BusOverlapError(MinikvmError):
    """Two devices claimed a shared address; names and ranges say which."""

    def __init__(self, name: str, base: int, length: int, other_name: str, other_base: int, other_length: int) -> None:
        self.name = name
        self.base = base
        self.length = length
        self.other_name = other_name
        self.other_base = other_base
        self.other_length = other_length
        where, other_where = _span(base, length), _span(other_base, other_length)
        super().__init__(f"{name} at {where} overlaps {other_name} at {other_where}")


class Bus:
    def __init__(self) -> None:
        self._ranges: list[tuple[int, int, str]] = []  # (base, length, name), sorted by base
        self._slots: dict[int, tuple[PortDevice, int]] = {}  # address -> (device, offset)
        # (address, "read" | "write") -> count: a guest touching nothing is
        # counted for --verbose, never an error.
        self.unclaimed: Counter[tuple[int, str]] = Counter()

    def register(self, base: int, length: int, device: PortDevice, name: str) -> None:
        if length <= 0:
            raise ValueError(f"{name}: range length must be positive, not {length}")
        if base < 0:
            raise ValueError(f"{name}: negative base address {base:#x}")
        index = bisect.bisect_right(self._ranges, base, key=lambda r: r[0])
        # The ranges are disjoint and sorted, so only the neighbours can overlap.
        for other_base, other_length, other_name in self._ranges[max(index - 1, 0) : index + 1]:
            if other_base < base + length and base < other_base + other_length:
                raise BusOverlapError(name, base, length, other_name, other_base, other_length)
        self._ranges.insert(index, (base, length, name))
        for offset in range(length):
            self._slots[base + offset] = (device, offset)

    def read(self, addr: int, size: int) -> int:
        """Read `size` bytes; a wide access goes whole to the device at `addr`."""
        slot = self._slots.get(addr)
        if slot is None:
            self.unclaimed[(addr, "read")] += 1
            return _ALL_ONES[size]  # nothing drives an open ISA bus: it floats high
        device, offset = slot
        return device.read(offset, size) & _ALL_ONES[size]

    def write(self, addr: int, size: int, value: int) -> None:
        slot = self._slots.get(addr)
        if slot is None:
            self.unclaimed[(addr, "write")] += 1
            return
        device, offset = slot
        device.write(offset, size, value)

    def write_bytes(self, addr: int, data: bytes) -> None:
        """Byte writes to one port in a row; a device with `write_bytes` takes them at once."""
        slot = self._slots.get(addr)
        if slot is None:
            self.unclaimed[(addr, "write")] += len(data)
            return
        device, offset = slot
        block = getattr(device, "write_bytes", None)
        if block is not None:
            block(offset, data)
        else:
            for value in data:
                device.write(offset, 1, value)

    def devices(self) -> list[tuple[int, int, str]]:
        """(base, length, name) of every registered range, by address."""
        return list(self._ranges)
