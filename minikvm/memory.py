"""Guest RAM: mmap-backed regions and the only sanctioned way to touch them.

Every access is bounds-checked and copies bytes in or out; no view of guest
RAM leaves this module except the host address handed to an accelerator,
so a guest or a bad address can never reach host memory beyond its RAM.
"""

from __future__ import annotations

import bisect
import ctypes
import mmap
import struct
from dataclasses import dataclass

from .errors import MinikvmError


class GuestMemoryError(MinikvmError):
    """An access outside guest RAM (the guest-physical address and length say where)."""

    def __init__(self, addr: int, length: int) -> None:
        self.addr = addr
        self.length = length
        super().__init__(f"guest memory access outside RAM: {length} byte(s) at {addr:#x}")


class GuestMemoryAllocationError(MinikvmError):
    """The host could not give the guest the RAM it asked for."""

    def __init__(self, size: int, reason: str) -> None:
        self.size = size
        super().__init__(f"cannot allocate {size // (1024 * 1024)} MiB of guest memory: {reason}")


@dataclass(frozen=True)
class MemoryRegion:
    guest_addr: int
    size: int
    host_addr: int

    @property
    def end(self) -> int:
        return self.guest_addr + self.size


class GuestMemory:
    """A sorted, non-overlapping set of RAM regions at guest-physical addresses."""

    def __init__(self, layout: list[tuple[int, int]]) -> None:
        """`layout` is (guest address, size) per region; sizes are page multiples."""
        self._maps: list[mmap.mmap] = []
        self._anchors: list[ctypes.c_char] = []  # buffer exports that pin the host addresses
        self.regions: list[MemoryRegion] = []
        previous_end = -1
        for guest_addr, size in sorted(layout):
            if size <= 0 or size % mmap.PAGESIZE or guest_addr % mmap.PAGESIZE:
                raise ValueError(f"region {guest_addr:#x}+{size:#x} is not page aligned")
            if guest_addr < previous_end:
                raise ValueError(f"region at {guest_addr:#x} overlaps the one before it")
            try:
                mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            except (OSError, OverflowError) as err:
                self.close()
                raise GuestMemoryAllocationError(size, str(err)) from None
            anchor = ctypes.c_char.from_buffer(mapping)
            self._maps.append(mapping)
            self._anchors.append(anchor)
            self.regions.append(MemoryRegion(guest_addr, size, ctypes.addressof(anchor)))
            previous_end = guest_addr + size
        self._starts = [r.guest_addr for r in self.regions]

    @property
    def size(self) -> int:
        return sum(r.size for r in self.regions)

    def _locate(self, addr: int, length: int) -> tuple[mmap.mmap, int]:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and length >= 0:
            region = self.regions[i]
            if addr + length <= region.end:
                return self._maps[i], addr - region.guest_addr
        raise GuestMemoryError(addr, length)

    def contains(self, addr: int, length: int = 1) -> bool:
        try:
            self._locate(addr, length)
        except GuestMemoryError:
            return False
        return True

    def read(self, addr: int, length: int) -> bytes:
        mapping, offset = self._locate(addr, length)
        return mapping[offset:offset + length]

    def write(self, addr: int, data: bytes) -> None:
        mapping, offset = self._locate(addr, len(data))
        mapping[offset:offset + len(data)] = data

    def fill(self, addr: int, length: int, byte: int = 0) -> None:
        self.write(addr, bytes([byte]) * length)

    def read_u8(self, addr: int) -> int:
        return self.read(addr, 1)[0]

    def read_u16(self, addr: int) -> int:
        return struct.unpack("<H", self.read(addr, 2))[0]

    def read_u32(self, addr: int) -> int:
        return struct.unpack("<I", self.read(addr, 4))[0]

    def read_u64(self, addr: int) -> int:
        return struct.unpack("<Q", self.read(addr, 8))[0]

    def write_u8(self, addr: int, value: int) -> None:
        self.write(addr, struct.pack("<B", value))

    def write_u16(self, addr: int, value: int) -> None:
        self.write(addr, struct.pack("<H", value))

    def write_u32(self, addr: int, value: int) -> None:
        self.write(addr, struct.pack("<I", value))

    def write_u64(self, addr: int, value: int) -> None:
        self.write(addr, struct.pack("<Q", value))

    def close(self) -> None:
        """Unmap the RAM. The accelerator must be gone first: it holds the host addresses."""
        self._anchors.clear()
        for mapping in self._maps:
            mapping.close()
        self._maps.clear()
        self.regions = []
        self._starts = []
