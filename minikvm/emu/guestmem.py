"""Guest-virtual memory access through Unicorn's own MMU.

The 2.1.4 Python binding does not wrap uc_vmem_translate, so it is called
through ctypes. Translating with QEMU's MMU means delivery code sees exactly
the mappings, permissions and CPL the emulated CPU sees.
"""

from __future__ import annotations

import ctypes
import functools
import struct

from unicorn import UC_PROT_READ, UC_PROT_WRITE, Uc, UcError

from ..errors import MinikvmError


@functools.cache
def _vmem_translate() -> ctypes._CFuncPtr:
    """uc_err uc_vmem_translate(uc_engine *uc, uint64_t address, uc_prot prot, uint64_t *paddress)."""
    from unicorn.unicorn_py3.unicorn import uclib

    function = uclib.uc_vmem_translate
    function.argtypes = (ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.POINTER(ctypes.c_uint64))
    function.restype = ctypes.c_int
    return function


class VirtualAccessFault(MinikvmError):
    """A guest-virtual access the emulated MMU refused (the guest would take #PF)."""

    def __init__(self, addr: int, write: bool) -> None:
        self.addr = addr
        self.write = write
        super().__init__(f"guest {'write to' if write else 'read of'} {addr:#x} is not mapped")


class GuestView:
    """Reads and writes guest memory at virtual addresses, with the CPU's current translation."""

    def __init__(self, uc: Uc) -> None:
        self.uc = uc

    def physical(self, addr: int, write: bool, prot: int | None = None) -> int:
        result = ctypes.c_uint64()
        if prot is None:
            prot = UC_PROT_WRITE if write else UC_PROT_READ
        if _vmem_translate()(self.uc._uch, addr, prot, ctypes.byref(result)) != 0:
            raise VirtualAccessFault(addr, write)
        return result.value

    def read(self, addr: int, length: int) -> bytes:
        data = bytearray()
        while length:
            chunk = min(length, 0x1000 - (addr & 0xFFF))
            try:
                data += self.uc.mem_read(self.physical(addr, False), chunk)
            except UcError:
                raise VirtualAccessFault(addr, False) from None
            addr, length = addr + chunk, length - chunk
        return bytes(data)

    def write(self, addr: int, data: bytes) -> None:
        # Translate every page first, so a fault leaves memory untouched.
        pieces = []
        offset = 0
        while offset < len(data):
            chunk = min(len(data) - offset, 0x1000 - ((addr + offset) & 0xFFF))
            pieces.append((self.physical(addr + offset, True), data[offset:offset + chunk]))
            offset += chunk
        for phys, piece in pieces:
            try:
                self.uc.mem_write(phys, piece)
            except UcError:
                raise VirtualAccessFault(addr, True) from None

    def read_u16(self, addr: int) -> int:
        return struct.unpack("<H", self.read(addr, 2))[0]

    def read_u32(self, addr: int) -> int:
        return struct.unpack("<I", self.read(addr, 4))[0]

    def read_u64(self, addr: int) -> int:
        return struct.unpack("<Q", self.read(addr, 8))[0]
