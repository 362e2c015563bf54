"""Two pieces of Unicorn state the VMM must reach that the API does not expose.

Unicorn never delivers exceptions through the guest's tables, so minikvm
does. Two things then go wrong inside Unicorn (UNICORN.md):

- QEMU's `old_exception` is only cleared by the delivery code Unicorn skips,
  so the second #PF of a run is misreported as #DF. It must be reset to -1
  after each delivery.
- A delivery from ring 3 to ring 0 must load ring-0 CS/SS, and Unicorn's
  register writes refuse that while the CPU is at CPL3. The CPL lives in
  QEMU's `hflags`; setting its two CPL bits to 0 makes the loads legal.

Both fields sit at fixed offsets of the saved-context blob, which depend on
the Unicorn build. They are found once per process by running two tiny
probe programs and diffing the blobs, and each is verified before use.
"""

from __future__ import annotations

import ctypes
import functools
import struct
from dataclasses import dataclass

from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_32, Uc, UcError
from unicorn.x86_const import (
    UC_X86_REG_CR0,
    UC_X86_REG_CR3,
    UC_X86_REG_CS,
    UC_X86_REG_DS,
    UC_X86_REG_ESP,
    UC_X86_REG_GDTR,
    UC_X86_REG_SS,
)

from ..errors import MinikvmError

_RAM = 0x400000
_GDT = 0x500
_CODE = 0x1000
_PD = 0x10000


class UnicornQuirkError(MinikvmError):
    """This Unicorn build does not behave as minikvm's software CPU needs."""


@dataclass(frozen=True)
class ContextOffsets:
    old_exception: int
    hflags: int


def _blob(uc: Uc) -> bytes:
    ctx = uc.context_save()
    return ctypes.string_at(ctx.context, ctx.size)


def _int32s(blob: bytes) -> tuple[int, ...]:
    return struct.unpack_from(f"<{len(blob) // 4}i", blob)


def _flat_machine() -> Uc:
    """A 32-bit CPU with a flat GDT (ring 0 and ring 3 code/data) and 4 MiB of RAM."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, _RAM)
    gdt = [0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF, 0x00CFFA000000FFFF, 0x00CFF2000000FFFF]
    uc.mem_write(_GDT, struct.pack("<5Q", *gdt))
    uc.reg_write(UC_X86_REG_GDTR, (0, _GDT, len(gdt) * 8 - 1, 0))
    uc.reg_write(UC_X86_REG_CS, 0x08)
    uc.reg_write(UC_X86_REG_DS, 0x10)
    uc.reg_write(UC_X86_REG_SS, 0x10)
    uc.reg_write(UC_X86_REG_ESP, 0x8000)
    return uc


def _find_old_exception() -> int:
    """Run a load from an unmapped page with paging on; the int32 that goes -1 → 14 is old_exception."""
    uc = _flat_machine()
    # One page table mapping only the first 4 MiB minus the page at 0x300000.
    pte = b"".join(struct.pack("<I", (i << 12) | 3 if i != 0x300 else 0) for i in range(1024))
    uc.mem_write(_PD, struct.pack("<I", (_PD + 0x1000) | 3) + bytes(4092))
    uc.mem_write(_PD + 0x1000, pte)
    uc.reg_write(UC_X86_REG_CR3, _PD)
    uc.reg_write(UC_X86_REG_CR0, uc.reg_read(UC_X86_REG_CR0) | 0x80000000)
    uc.mem_write(_CODE, bytes.fromhex("a1 00 00 30 00 f4"))  # mov eax, [0x300000]; hlt
    before = _int32s(_blob(uc))
    inside: list[tuple[int, ...]] = []

    def on_interrupt(uc: Uc, vector: int, _: object) -> None:
        inside.append(_int32s(_blob(uc)))
        uc.emu_stop()

    uc.hook_add(UC_HOOK_INTR, on_interrupt)
    uc.emu_start(_CODE, _CODE + 6)
    if not inside:
        raise UnicornQuirkError("probe page fault was not reported by Unicorn")
    candidates = [i * 4 for i, (a, b) in enumerate(zip(before, inside[0], strict=True)) if a == -1 and b == 14]
    if len(candidates) != 1:
        raise UnicornQuirkError(f"cannot locate old_exception in Unicorn's context ({len(candidates)} candidates)")
    return candidates[0]


def _find_hflags() -> int:
    """Drop to ring 3 with IRET and diff the blobs: hflags' CPL bits go 0 → 3, nothing else in it changes."""
    uc = _flat_machine()
    # push 0x23; push 0x7000; pushfd; push 0x1b; push ring3; iretd; ring3: hlt (→ #GP at CPL3)
    code = bytes.fromhex("6a 23 68 00 70 00 00 9c 6a 1b 68 10 10 00 00 cf f4")
    uc.mem_write(_CODE, code)
    before = _int32s(_blob(uc))
    inside: list[tuple[int, ...]] = []

    def on_interrupt(uc: Uc, vector: int, _: object) -> None:
        inside.append(_int32s(_blob(uc)))
        uc.emu_stop()

    uc.hook_add(UC_HOOK_INTR, on_interrupt)
    uc.emu_start(_CODE, _CODE + len(code))
    if not inside or uc.reg_read(UC_X86_REG_CS) != 0x1B:
        raise UnicornQuirkError("probe could not reach ring 3")
    candidates = [i * 4 for i, (a, b) in enumerate(zip(before, inside[0], strict=True))
                  if a & 3 == 0 and b & 3 == 3 and a & ~3 == b & ~3 and a != 0]
    for offset in candidates:
        if _cpl0_works(uc, offset):
            return offset
    raise UnicornQuirkError(f"cannot locate hflags in Unicorn's context ({len(candidates)} candidates)")


def _cpl0_works(uc: Uc, offset: int) -> bool:
    """With the CPL bits cleared at `offset`, does loading ring-0 SS/CS succeed?"""
    saved = uc.context_save()
    try:
        set_int32(uc, offset, lambda value: value & ~3)
        uc.reg_write(UC_X86_REG_SS, 0x10)
        uc.reg_write(UC_X86_REG_CS, 0x08)
    except UcError:
        return False
    finally_ok = uc.reg_read(UC_X86_REG_CS) == 0x08
    uc.context_restore(saved)
    return finally_ok


def set_int32(uc: Uc, offset: int, change: object) -> None:
    """Rewrite one int32 of the CPU state through a context save/restore."""
    ctx = uc.context_save()
    address = ctx.context.value + offset if hasattr(ctx.context, "value") else ctypes.addressof(ctx.context) + offset
    field = ctypes.c_int32.from_address(address)
    field.value = change(field.value)  # type: ignore[operator]
    uc.context_restore(ctx)


@functools.cache
def context_offsets() -> ContextOffsets:
    """Measured once per process; raises UnicornQuirkError on an incompatible Unicorn."""
    return ContextOffsets(old_exception=_find_old_exception(), hflags=_find_hflags())


def reset_old_exception(uc: Uc) -> None:
    set_int32(uc, context_offsets().old_exception, lambda value: -1)


def force_cpl0(uc: Uc) -> None:
    """Make Unicorn's CPU think it is at CPL0 so ring-0 selectors can be loaded."""
    set_int32(uc, context_offsets().hflags, lambda value: value & ~3)
