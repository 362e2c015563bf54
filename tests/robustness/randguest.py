"""Random guests: images a hostile or broken guest could be, and the harness that runs them.

A guest is made from one integer seed (`generate(seed)`), so any run can be
repeated exactly. Four kinds of image:

- ``bytes``: random bytes;
- ``decodable``: random bytes with everything capstone cannot decode
  dropped, so the CPU meets real instructions, mostly odd ones;
- ``templates``: a random sequence from a table of instruction templates
  (moves, arithmetic, loads and stores inside and outside RAM, port I/O,
  string I/O, hypercalls, control registers, MSRs, descriptor tables,
  segment loads, software interrupts, far jumps, IRET, SSE/x87, ...);
- ``io``: only port, MMIO and hypercall traffic (UART, PIC, PIT, VGA CRTC,
  i8042, hypercalls with random numbers, string I/O with large counts).

Each runs in real, protected, paging (the ``--paging`` layout) or long mode,
with a random RAM size, with or without interrupts, and with no input, some
input, or input that stays open.

`run_guest` runs one guest in this process and checks the contract: it ends
with a StopReason within the timeout, the stop report can be written, and no
thread or file descriptor is left behind. `Pool` runs batches in worker
processes (``python -m tests.robustness.randguest worker``), so that a crash
of the interpreter or a hang is caught too, with the seed that caused it.

Reproduce one guest: ``python -m tests.robustness.randguest one SEED --mode M
--accel A`` (add ``--write FILE`` to get the image and a ``minikvm run``
command line for it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `python -m` from the checkout, or bench/soak.py
    sys.path.insert(0, str(REPO))

from minikvm.arch.x86.state import Mode  # noqa: E402
from minikvm.boot import layout  # noqa: E402

MODES = ("real", "protected", "paging", "long")
KINDS = ("bytes", "decodable", "templates", "io")
KIB, MIB = 1024, 1024 * 1024

# RAM sizes per mode: small ones put MMIO holes where guests reach them.
MEMORY_CHOICES = {
    "real": (64 * KIB, 128 * KIB, 256 * KIB, 640 * KIB, 1 * MIB, 2 * MIB),
    "protected": (64 * KIB, 256 * KIB, 1 * MIB, 4 * MIB, 16 * MIB),
    "paging": (0x104000, 2 * MIB, 4 * MIB, 8 * MIB),  # the layout's tables end at 0x103000
    "long": (256 * KIB, 1 * MIB, 4 * MIB, 16 * MIB),
}
LOAD = {"real": 0, "protected": layout.PM_LOAD, "paging": layout.PAGING_LOAD, "long": layout.PM_LOAD}
BITS = {"real": 16, "protected": 32, "paging": 32, "long": 64}

# Ports a PC guest pokes at: the devices minikvm models, the ones it answers as absent, and neighbours.
DEVICE_PORTS = (
    *range(0x3F8, 0x400), 0x500, 0x501, 0x4FF, 0x60, 0x61, 0x64, 0x92, *range(0xF4, 0xF8),
    0x20, 0x21, 0xA0, 0xA1, *range(0x40, 0x44), 0x70, 0x71, 0x80, *range(0x3C0, 0x3E0), 0xCF8, 0xCFC,
)
MSRS = (0x10, 0x1B, 0xFE, 0x174, 0x175, 0x176, 0x277, 0x2FF, 0xC0000080, 0xC0000081, 0xC0000082,
        0xC0000084, 0xC0000100, 0xC0000101, 0xC0000102, 0x40000000, 0xDEADBEEF)


# --- a tiny assembler: just the encodings the templates need -------------------------------------------


class Asm:
    """x86 encodings for one code size (16, 32 or 64 bits). Registers are numbered 0-7 (AX..DI)."""

    def __init__(self, bits: int) -> None:
        self.bits = bits

    @property
    def word(self) -> int:
        """The default operand size in bytes (64-bit code: 4, with REX.W for 8)."""
        return 2 if self.bits == 16 else 4

    def imm(self, value: int, size: int | None = None) -> bytes:
        size = size or self.word
        return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def mov_imm(self, reg: int, value: int) -> bytes:
        return bytes([0xB8 + reg]) + self.imm(value)

    def mov_dx(self, port: int) -> bytes:
        return (b"" if self.bits == 16 else b"\x66") + b"\xba" + self.imm(port, 2)

    def size_prefix(self, size: int) -> bytes:
        """The prefix that makes an instruction's operand `size` bytes (1 needs a byte opcode instead)."""
        if size == 2 and self.bits != 16:
            return b"\x66"
        if size == 4 and self.bits == 16:
            return b"\x66"
        return b""

    def absolute(self, opcode: bytes, reg: int, address: int) -> bytes:
        """`opcode` with a ModRM that addresses [address] (DS-relative in 16-bit code)."""
        if self.bits == 16:
            return opcode + bytes([(reg << 3) | 6]) + self.imm(address, 2)
        if self.bits == 32:
            return opcode + bytes([(reg << 3) | 5]) + self.imm(address, 4)
        return opcode + bytes([(reg << 3) | 4, 0x25]) + self.imm(address, 4)  # SIB: no base, no index

    def modrm_reg(self, opcode: bytes, reg: int, rm: int) -> bytes:
        return opcode + bytes([0xC0 | (reg << 3) | rm])

    def wide(self) -> bytes:
        """REX.W in 64-bit code (for IRETQ, MOV to CR with a 64-bit source is implicit)."""
        return b"\x48" if self.bits == 64 else b""


def _port(rng: random.Random) -> int:
    return rng.choice(DEVICE_PORTS) if rng.random() < 0.8 else rng.randrange(0x10000)


def _value(rng: random.Random, size: int) -> int:
    return rng.choice((0, 1, 0xFF, 0x80, rng.randrange(1 << (8 * size)), (1 << (8 * size)) - 1))


@dataclass
class Ctx:
    """What the templates know about the guest they write code for."""

    rng: random.Random
    asm: Asm
    mode: str
    memory: int
    load: int

    def address(self) -> int:
        """A data address: in RAM, just past it (MMIO), in the VGA window, or anywhere."""
        rng, limit = self.rng, (0x10000 if self.asm.bits == 16 else 1 << 32)
        choice = rng.random()
        if choice < 0.45:
            base = 0x2000 if self.memory > 0x3000 else 0x100
            return rng.randrange(base, min(self.memory, limit, base + 0x8000))
        if choice < 0.65 and self.memory < limit:
            return rng.randrange(self.memory, min(limit, self.memory + 0x2000))
        if choice < 0.8 and self.asm.bits != 16:
            return 0xB8000 + rng.randrange(0, 0x1000)
        return rng.randrange(limit)

    def reg(self) -> int:
        """A scratch register: not SP (a guest that loses its stack is a template of its own)."""
        return self.rng.choice((0, 1, 2, 3, 5, 6, 7))


Template = Callable[[Ctx], bytes]


def t_mov_imm(c: Ctx) -> bytes:
    return c.asm.mov_imm(c.reg(), _value(c.rng, c.asm.word))


def t_alu(c: Ctx) -> bytes:
    op = c.rng.choice((0x01, 0x29, 0x31, 0x21, 0x09, 0x39, 0x85, 0x11, 0x19))
    return c.asm.modrm_reg(bytes([op]), c.reg(), c.reg())


def t_alu_imm(c: Ctx) -> bytes:
    return c.asm.modrm_reg(b"\x83", c.rng.randrange(8), c.reg()) + bytes([c.rng.randrange(256)])


def t_shift(c: Ctx) -> bytes:
    return c.asm.modrm_reg(b"\xc1", c.rng.choice((0, 1, 4, 5, 7)), c.reg()) + bytes([c.rng.randrange(64)])


def t_incdec(c: Ctx) -> bytes:
    return c.asm.modrm_reg(b"\xff", c.rng.randrange(2), c.reg())


def t_push_pop(c: Ctx) -> bytes:
    return bytes([0x50 + c.reg(), 0x58 + c.reg()])


def t_store(c: Ctx) -> bytes:
    size = c.rng.choice((1, 2, 4))
    opcode = b"\x88" if size == 1 else c.asm.size_prefix(size) + b"\x89"
    return c.asm.absolute(opcode, c.reg(), c.address())


def t_load(c: Ctx) -> bytes:
    size = c.rng.choice((1, 2, 4))
    opcode = b"\x8a" if size == 1 else c.asm.size_prefix(size) + b"\x8b"
    return c.asm.absolute(opcode, c.reg(), c.address())


def t_store_imm(c: Ctx) -> bytes:
    """mov dword [addr], imm32: a store of a value, not a register."""
    return c.asm.size_prefix(4) + c.asm.absolute(b"\xc7", 0, c.address()) + c.asm.imm(c.rng.randrange(1 << 32), 4)


def t_segment(c: Ctx) -> bytes:
    """Load DS/ES/SS/FS/GS with a random selector (real mode: a segment reaching above 1 MiB too)."""
    sreg = c.rng.choice((0, 3, 4, 5, 3, 0))  # es, ds, fs, gs (ss rarely: it moves the stack)
    if c.rng.random() < 0.1:
        sreg = 2
    value = c.rng.choice((0, 0x8, 0x10, 0x18, 0x20, 0x23, 0x28, 0xB800, 0xFFFF, c.rng.randrange(0x10000)))
    return c.asm.mov_imm(0, value) + bytes([0x8E, 0xC0 | (sreg << 3)])


def t_out(c: Ctx) -> bytes:
    port, size = _port(c.rng), c.rng.choice((1, 1, 1, 2, 4))
    value = c.asm.mov_imm(0, _value(c.rng, 4))
    if port < 0x100 and c.rng.random() < 0.5:
        return value + (b"\xe6" if size == 1 else c.asm.size_prefix(size) + b"\xe7") + bytes([port])
    return value + c.asm.mov_dx(port) + (b"\xee" if size == 1 else c.asm.size_prefix(size) + b"\xef")


def t_in(c: Ctx) -> bytes:
    port, size = _port(c.rng), c.rng.choice((1, 1, 1, 2, 4))
    if port < 0x100 and c.rng.random() < 0.5:
        return (b"\xe4" if size == 1 else c.asm.size_prefix(size) + b"\xe5") + bytes([port])
    return c.asm.mov_dx(port) + (b"\xec" if size == 1 else c.asm.size_prefix(size) + b"\xed")


def t_string_io(c: Ctx) -> bytes:
    """rep outs/ins: KVM hands these over as one exit with a count (and a page of data)."""
    rng, asm = c.rng, c.asm
    size = rng.choice((1, 2, 4))
    count = rng.choice((1, 2, 16, 100, 4096, rng.randrange(1, 0x10000)))
    buffer = rng.randrange(0x100, min(c.memory, 0x10000) - 0x100) if asm.bits == 16 else c.address()
    direction = b"\xfd" if rng.random() < 0.1 else b"\xfc"  # STD now and then: the string runs downwards
    op = rng.choice((0x6E, 0x6C)) + (0 if size == 1 else 1)
    code = asm.mov_imm(1, count) + asm.mov_imm(6, buffer) + asm.mov_imm(7, buffer) + asm.mov_dx(_port(rng))
    return code + direction + b"\xf3" + (asm.size_prefix(size) if size > 1 else b"") + bytes([op]) + b"\xfc"


def t_hypercall(c: Ctx) -> bytes:
    """ABI.md: OUT 0x500 with AL = number, BL = argument; GETCHAR's byte is read back with IN."""
    rng, asm = c.rng, c.asm
    number = rng.choices((1, 2, 0, rng.randrange(3, 256)), weights=(70, 25, 1, 2))[0]
    code = asm.mov_dx(0x500) + bytes([0xB3, rng.randrange(256), 0xB0, number, 0xEE])
    if number == 2:
        code += b"\xec"
    return code


def t_putchar_run(c: Ctx) -> bytes:
    """A short string through PUTCHAR."""
    text = bytes(c.rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789 \n") for _ in range(c.rng.randrange(1, 12)))
    code = c.asm.mov_dx(0x500) + b"\xb0\x01"
    for byte in text:
        code += bytes([0xB3, byte, 0xEE])
    return code


def t_uart(c: Ctx) -> bytes:
    """A UART register write or read, as a driver would (and then some)."""
    offset = c.rng.randrange(8)
    code = c.asm.mov_dx(0x3F8 + offset)
    if c.rng.random() < 0.6:
        return code + bytes([0xB0, _value(c.rng, 1), 0xEE])
    return code + b"\xec"


def t_pic_pit(c: Ctx) -> bytes:
    """Program the PIC or PIT with random words (an OS's timer setup, garbled)."""
    rng = c.rng
    seq = rng.choice((
        [(0x20, 0x11), (0x21, rng.choice((0x08, 0x20, rng.randrange(256)))), (0x21, 0x04), (0x21, 0x01)],
        [(0x21, rng.randrange(256))],
        [(0x43, rng.choice((0x34, 0x36, 0xB6, rng.randrange(256)))), (0x40, rng.randrange(256)),
         (0x40, rng.randrange(256))],
        [(0x20, rng.choice((0x20, 0x0A, 0x0B, rng.randrange(256))))],
        [(0x61, rng.randrange(256))],
        [(0xA0, rng.randrange(256)), (0xA1, rng.randrange(256))],
    ))
    return b"".join(bytes([0xB0, value, 0xE6, port]) for port, value in seq)


def t_vga(c: Ctx) -> bytes:
    """CRTC index/data (start address, cursor) and text-buffer writes."""
    rng, asm = c.rng, c.asm
    index = rng.choice((0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, rng.randrange(256)))
    code = asm.mov_dx(0x3D4) + bytes([0xB0, index, 0xEE]) + asm.mov_dx(0x3D5) + bytes([0xB0, rng.randrange(256), 0xEE])
    if asm.bits != 16:
        code += asm.size_prefix(2) + asm.absolute(b"\xc7", 0, 0xB8000 + 2 * rng.randrange(0x4000)) + \
            asm.imm(rng.randrange(0x10000), 2)
    return code


def t_reset_ports(c: Ctx) -> bytes:
    """The ways a PC resets or exits: i8042 pulse, port 0x92, debug exit (rare: they end the guest)."""
    rng = c.rng
    port, value = rng.choice(((0x64, 0xFE), (0x64, rng.randrange(256)), (0x92, rng.randrange(256)),
                              (0xF4, rng.randrange(256)), (0x60, rng.randrange(256))))
    return bytes([0xB0, value, 0xE6, port])


def t_cr(c: Ctx) -> bytes:
    """MOV to or from a control register, with a random value (privileged; often #GP)."""
    rng, asm = c.rng, c.asm
    cr = rng.choice((0, 0, 3, 4, 2, 8 if asm.bits == 64 else 0))
    if cr == 8:
        prefix = b"\x44"  # REX.R: CR8
        cr = 0
    else:
        prefix = b""
    if rng.random() < 0.5:
        return prefix + asm.modrm_reg(b"\x0f\x20", cr, c.reg())
    value = rng.choice((rng.randrange(1 << 32), 0x80000011, 0x11, 0x60000010, 0x20, 0x6F8, 0x30, 0))
    return asm.mov_imm(0, value) + prefix + asm.modrm_reg(b"\x0f\x22", cr, 0)


def t_msr(c: Ctx) -> bytes:
    rng, asm = c.rng, c.asm
    code = asm.mov_imm(1, rng.choice(MSRS))
    if rng.random() < 0.5:
        return code + b"\x0f\x32"
    return code + asm.mov_imm(0, _value(rng, 4)) + asm.mov_imm(2, rng.choice((0, rng.randrange(1 << 32)))) + b"\x0f\x30"


def t_tables(c: Ctx) -> bytes:
    """LIDT/LGDT from random memory, or SIDT/SGDT into it."""
    op = c.rng.choice((3, 2, 1, 0, 3, 7))  # lidt, lgdt, sidt, sgdt, lidt, invlpg
    return c.asm.absolute(b"\x0f\x01", op, c.address())


def t_misc(c: Ctx) -> bytes:
    rng, asm = c.rng, c.asm
    choices = [b"\x90", b"\xfa", b"\xfb", b"\xf4", b"\x0f\xa2", b"\x0f\x31", b"\xf3\x90", b"\xcc", b"\x0f\x0b",
               b"\x0f\x09", b"\x0f\x08", b"\x0f\x06", b"\x0f\x05", b"\x0f\x34", b"\x0f\x01\xd0", b"\x9c\x9d",
               b"\x0f\x00\xd8", b"\x0f\x01\xf8", b"\xf1", b"\xd6", b"\x0f\xae\xf0"]
    if asm.bits != 64:
        choices += [b"\xce", b"\x60\x61", b"\x27", b"\x62\x00"]
    return rng.choice(choices)


def t_int(c: Ctx) -> bytes:
    return bytes([0xCD, c.rng.choice((0, 1, 3, 6, 8, 13, 14, 0x10, 0x13, 0x15, 0x16, 0x80, c.rng.randrange(256)))])


def t_div(c: Ctx) -> bytes:
    divisor = c.rng.choice((0, 0, 1, c.rng.randrange(1 << 16)))
    return c.asm.mov_imm(1, divisor) + c.asm.mov_imm(2, c.rng.randrange(1 << 16)) + b"\xf7\xf1"


def t_trap_flag(c: Ctx) -> bytes:
    """pushf; or [sp], TF; popf: single-step traps from here on."""
    asm = c.asm
    if asm.bits == 16:
        return b"\x9c\x89\xe5\x81\x4e\x00\x00\x01\x9d"  # pushf; mov bp,sp; or word [bp+0],0x100; popf
    return b"\x9c\x81\x0c\x24\x00\x01\x00\x00\x9d"  # pushf; or dword [esp],0x100; popf


def t_far(c: Ctx) -> bytes:
    """A far jump or return to a random selector/segment, or IRET off a random stack."""
    rng, asm = c.rng, c.asm
    selector = rng.choice((0x08, 0x10, 0x18, 0x1B, 0x20, 0x28, 0, rng.randrange(0x10000)))
    choice = rng.random()
    if choice < 0.4 and asm.bits != 64:
        return b"\xea" + asm.imm(c.load + rng.randrange(0x100), asm.word) + asm.imm(selector, 2)
    if choice < 0.7:
        return asm.mov_imm(0, selector) + b"\x50" + asm.mov_imm(0, c.load + rng.randrange(0x100)) + b"\x50" + \
            asm.wide() + b"\xcb"  # push sel; push ip; retf
    return asm.wide() + b"\xcf"  # iret with whatever is on the stack


def t_stack(c: Ctx) -> bytes:
    """Point the stack somewhere odd (outside RAM, unaligned, zero)."""
    return c.asm.mov_imm(4, c.rng.choice((0, 2, c.address(), c.memory, 0xFFFFFFF0)))


def t_simd(c: Ctx) -> bytes:
    """SSE/x87 and friends: KVM's emulator at CPL0 on some hosts lacks them (and fxsave is a shutdown there)."""
    asm = c.asm
    return c.rng.choice((b"\x66\x0f\xef\xc0", b"\xdb\xe3", b"\xd9\xe8", b"\x0f\x58\xc0", b"\xf3\x0f\xb8\xc0",
                         b"\xf2\x0f\x38\xf0\xc0", asm.absolute(b"\x0f\xae", 0, c.address()),
                         asm.absolute(b"\x0f\xae", 1, c.address()), b"\x0f\x77", b"\xc5\xf8\x77"))


def t_debug_regs(c: Ctx) -> bytes:
    """Hardware breakpoints set by the guest itself (DR0 at the code, DR7 enabling it)."""
    asm = c.asm
    return asm.mov_imm(0, c.load + c.rng.randrange(0x40)) + asm.modrm_reg(b"\x0f\x23", 0, 0) + \
        asm.mov_imm(0, c.rng.choice((0x1, 0x3, 0x303, c.rng.randrange(1 << 32)))) + asm.modrm_reg(b"\x0f\x23", 7, 0)


def t_jump(c: Ctx) -> bytes:
    """A short forward jump or conditional jump over a few filler bytes."""
    skip = c.rng.randrange(0, 6)
    opcode = c.rng.choice((0xEB, *range(0x70, 0x80)))
    return bytes([opcode, skip]) + bytes(c.rng.choice((0x90, 0xF4, 0xCC)) for _ in range(skip))


def t_loop(c: Ctx) -> bytes:
    """mov cx, n; body; loop body: a bounded loop (unless the body clobbers CX)."""
    body = c.rng.choice((t_out, t_in, t_hypercall, t_alu, t_uart, t_store))(c)
    if len(body) > 120:
        body = b"\x90"
    return c.asm.mov_imm(1, c.rng.randrange(1, 200)) + body + bytes([0xE2, (-(len(body) + 2)) & 0xFF])


def t_call(c: Ctx) -> bytes:
    """call to the next instruction, then drop the return address (or return to it)."""
    asm = c.asm
    call = b"\xe8" + asm.imm(0, asm.word)
    return call + (bytes([0x58 + c.reg()]) if c.rng.random() < 0.7 else b"")


TEMPLATES: dict[str, tuple[Template, int]] = {  # name -> (template, weight)
    "mov_imm": (t_mov_imm, 8), "alu": (t_alu, 8), "alu_imm": (t_alu_imm, 5), "shift": (t_shift, 3),
    "incdec": (t_incdec, 3), "push_pop": (t_push_pop, 3), "store": (t_store, 8), "load": (t_load, 8),
    "store_imm": (t_store_imm, 3), "segment": (t_segment, 2), "out": (t_out, 8), "in": (t_in, 6),
    "string_io": (t_string_io, 3), "hypercall": (t_hypercall, 8), "putchar": (t_putchar_run, 4),
    "uart": (t_uart, 5), "pic_pit": (t_pic_pit, 2), "vga": (t_vga, 2), "reset": (t_reset_ports, 1),
    "cr": (t_cr, 2), "msr": (t_msr, 2), "tables": (t_tables, 2), "misc": (t_misc, 4), "int": (t_int, 2),
    "div": (t_div, 1), "trap_flag": (t_trap_flag, 1), "far": (t_far, 1), "stack": (t_stack, 1),
    "simd": (t_simd, 1), "debug_regs": (t_debug_regs, 1), "jump": (t_jump, 4), "loop": (t_loop, 2),
    "call": (t_call, 2),
}
IO_TEMPLATES = ("out", "in", "string_io", "hypercall", "putchar", "uart", "pic_pit", "vga", "load", "store",
                "loop", "reset")


def _terminator(c: Ctx) -> bytes:
    """How a generated program ends: HLT, the EXIT hypercall, the debug-exit port, a spin, or nothing."""
    rng, asm = c.rng, c.asm
    return rng.choices((b"\xf4", asm.mov_dx(0x500) + b"\xb0\x00\xee\xf4", b"\xb0\x00\xe6\xf4",
                        b"\xfa\xf4", b"\xeb\xfe", b""), weights=(30, 15, 8, 10, 3, 34))[0]


def _decodable(rng: random.Random, bits: int, length: int) -> bytes:
    """Random bytes, keeping only what capstone decodes as instructions."""
    import capstone

    mode = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}[bits]
    engine = capstone.Cs(capstone.CS_ARCH_X86, mode)
    raw = rng.randbytes(length * 2)
    out = bytearray()
    offset = 0
    while offset < len(raw) - 16 and len(out) < length:
        decoded = next(engine.disasm_lite(raw[offset:offset + 15], 0, 1), None)
        if decoded is None:
            offset += 1
            continue
        out += raw[offset:offset + decoded[1]]
        offset += decoded[1]
    return bytes(out)


# --- guests -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomGuest:
    seed: int
    mode: str
    kind: str
    image: bytes
    memory: int
    interrupts: bool
    stdin: bytes | None  # None: input stays open and empty (a terminal nobody types at)
    stop_after: float | None  # an asynchronous stop request (Ctrl-C) after this many seconds, or none

    @property
    def name(self) -> str:
        return f"rg{self.seed}"

    def spec(self, interrupts: bool | None = None) -> object:
        from minikvm.machine import GuestSpec

        return GuestSpec(self.name, f"<random guest {self.seed}>", self.image, Mode(self.mode), self.memory,
                         interrupts=self.interrupts if interrupts is None else interrupts)

    def command_line(self, path: str, accel: str, timeout: float) -> str:
        """The `minikvm run` command that runs this guest (input as the guest had it is up to the shell)."""
        interrupts = "--interrupts" if self.interrupts else "--no-interrupts"
        return (f"minikvm run --mode {self.mode} --memory {self.memory} {interrupts} --accel {accel} "
                f"--timeout {timeout:g} {path}")


def generate(seed: int, mode: str | None = None, kind: str | None = None) -> RandomGuest:
    """The guest for `seed`; `mode`/`kind` override what the seed would pick (the rest stays the same)."""
    rng = random.Random(seed)
    picked_mode = rng.choice(MODES)
    picked_kind = rng.choices(KINDS, weights=(15, 20, 45, 20))[0]
    mode = mode or picked_mode
    kind = kind or picked_kind
    memory = rng.choice(MEMORY_CHOICES[mode])
    interrupts = rng.random() < (0.7 if mode == "paging" else 0.15)
    stdin = rng.choices((b"", None, b"x", b"hello\nq\x03\x00\xff" * 3, rng.randbytes(64)),
                        weights=(40, 20, 10, 15, 15))[0]
    stop_after = rng.uniform(0.0, 0.2) if rng.random() < 0.08 else None
    asm = Asm(BITS[mode])
    load = LOAD[mode]
    ctx = Ctx(rng, asm, mode, memory, load)
    if kind == "bytes":
        image = rng.randbytes(rng.randrange(1, 512))
    elif kind == "decodable":
        image = _decodable(rng, asm.bits, rng.randrange(16, 400)) + _terminator(ctx)
    else:
        names = list(TEMPLATES) if kind == "templates" else list(IO_TEMPLATES)
        weights = [TEMPLATES[name][1] for name in names]
        image = b""
        if interrupts and rng.random() < 0.5:
            image += b"\xfb"  # sti: let the timer in
        for _ in range(rng.randrange(1, 60)):
            image += TEMPLATES[rng.choices(names, weights)[0]][0](ctx)
        image += _terminator(ctx)
    image = image or b"\xf4"
    return RandomGuest(seed, mode, kind, _fit(image, mode, memory), memory, interrupts, stdin, stop_after)


def _fit(image: bytes, mode: str, memory: int) -> bytes:
    """Cut an image to what the mode's loader accepts in this much RAM (generated images are small)."""
    room = {"real": min(memory, 0x10000), "protected": memory - LOAD[mode], "paging": 0x100000 - LOAD[mode],
            "long": memory // 2 - LOAD[mode]}[mode]
    return image[:max(1, room)]


# --- running one guest --------------------------------------------------------------------------------------

RUN_SLACK = 1.5  # seconds a run may take past its timeout (a stop request must be seen by then)
REPORT_SLACK = 2.0  # the report's own budget beyond the replay the explainer may do on the software CPU
INPUT_GRACE = 0.05


@dataclass
class Record:
    seed: int
    mode: str
    kind: str
    accel: str
    outcome: str  # "stop", "refused" (a loader's clean error), or a crash: "exception", "internal-error",
    #               "slow-stop", "slow-report", "thread-leak", "fd-leak", "bad-stop", "hang", "died"
    stop: str = ""  # the StopKind label, or the error type
    message: str = ""  # the stop message, or the error
    run_seconds: float = 0.0
    report_seconds: float = 0.0
    output_bytes: int = 0
    report_lines: int = 0
    interrupts: bool = False
    detail: str = ""  # a traceback or what leaked

    @property
    def crashed(self) -> bool:
        return self.outcome not in ("stop", "refused")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size now (VmRSS), in bytes."""
    return _status_bytes(pid, "VmRSS:")


def peak_rss_bytes(pid: int | str = "self") -> int:
    """The highest resident set size so far (VmHWM), in bytes."""
    return _status_bytes(pid, "VmHWM:")


def _status_bytes(pid: int | str, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


class _Sink:
    """Guest output: counted, the first few KiB kept (a flood must not grow this process)."""

    def __init__(self, keep: int = 4096) -> None:
        self.count = 0
        self.head = bytearray()
        self.keep = keep

    def __call__(self, data: bytes) -> None:
        self.count += len(data)
        if len(self.head) < self.keep:
            self.head += data[:self.keep - len(self.head)]


def kvm_can_run(mode: str, interrupts: bool = False) -> bool:
    """Whether this host's KVM runs a guest of `mode` (minikvm's own measurement)."""
    from minikvm.accel import AcceleratorError, choose

    try:
        choose("kvm", Mode(mode), interrupts)
    except AcceleratorError:
        return False
    return True


def make_accel(name: str) -> object:
    if name == "kvm":
        from minikvm.kvm.system import Kvm

        return Kvm()
    from minikvm.emu.cpu import Emu

    return Emu()


def _normalise(message: str) -> str:
    return re.sub(r"0x[0-9a-f]+|\b\d+\b", "N", message)


def run_guest(guest: RandomGuest, accel: object, timeout: float) -> Record:
    """Run one guest in this process and check minikvm's contract for it (see Record.outcome)."""
    from minikvm.debug.explain import explain
    from minikvm.debug.report import stop_line
    from minikvm.devices.input import InputBuffer
    from minikvm.errors import MinikvmError
    from minikvm.machine import Machine, MachineConfig, run_machines
    from minikvm.stop import StopKind, StopReason

    name = accel.name  # type: ignore[attr-defined]
    interrupts = guest.interrupts and (name != "kvm" or kvm_can_run(guest.mode, True))
    record = Record(guest.seed, guest.mode, guest.kind, name, "stop", interrupts=interrupts)
    threads_before = set(threading.enumerate())
    fds_before = fd_count()
    buffer = InputBuffer()
    if guest.stdin is not None:
        buffer.feed(guest.stdin)
        buffer.close()
    sink = _Sink()
    spec = guest.spec(interrupts)
    try:
        machine = Machine(MachineConfig(spec, input_grace=INPUT_GRACE), accel, sink, buffer)  # type: ignore[arg-type]
    except MinikvmError as err:
        record.outcome, record.stop, record.message = "refused", type(err).__name__, str(err)
        return _check_leaks(record, threads_before, fds_before)
    except Exception as err:
        record.outcome, record.stop, record.message = "exception", type(err).__name__, repr(err)
        record.detail = traceback.format_exc()
        return record
    timer = None
    try:
        if guest.stop_after is not None:
            timer = threading.Timer(guest.stop_after, machine.request_stop,
                                    (StopReason(StopKind.INTERRUPTED, "interrupted (random Ctrl-C)"),))
            timer.start()
        started = time.monotonic()
        result = run_machines([machine], timeout=timeout)[0]
        record.run_seconds = time.monotonic() - started
        if timer is not None:
            timer.cancel()
            timer.join()
        started = time.monotonic()
        lines = [stop_line(result), *explain(machine, result)]
        record.report_seconds = time.monotonic() - started
        record.report_lines = len(lines)
        record.stop, record.message = result.stop.kind.value, result.stop.message
        record.output_bytes = sink.count
        if not isinstance(result.stop, StopReason) or not result.stop.message or "\n" in result.stop.message:
            record.outcome = "bad-stop"
        elif result.stop.kind is StopKind.ACCEL_ERROR and result.stop.message.startswith("internal error"):
            record.outcome = "internal-error"  # run_machines caught a Python exception from the run loop
        elif record.run_seconds > timeout + RUN_SLACK:
            record.outcome = "slow-stop"
        elif record.report_seconds > max(2.0, 4 * result.wall_seconds + 1) + REPORT_SLACK:
            record.outcome = "slow-report"
    except Exception as err:
        record.outcome, record.stop, record.message = "exception", type(err).__name__, repr(err)
        record.detail = traceback.format_exc()
    finally:
        if timer is not None:
            timer.cancel()
        machine.close()
    return _check_leaks(record, threads_before, fds_before)


def _check_leaks(record: Record, threads_before: set[threading.Thread], fds_before: int) -> Record:
    if record.crashed:
        return record
    leaked = [t.name for t in threading.enumerate() if t not in threads_before]
    if leaked:
        record.outcome, record.detail = "thread-leak", f"threads left running: {leaked}"
        return record
    fds = fd_count()
    if fds != fds_before:
        record.outcome, record.detail = "fd-leak", f"open file descriptors {fds_before} -> {fds}"
    return record


# --- worker processes ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    accel: str
    mode: str | None  # None: the mode each seed picks (restricted to what `accel` can run)
    seeds: range
    timeout: float


def _worker(args: argparse.Namespace) -> int:
    """Run seeds in this process, one JSON line per event on stdout."""
    import gc

    accel = make_accel(args.accel)
    out = sys.stdout

    def emit(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    modes = [m for m in MODES if args.accel == "emu" or kvm_can_run(m)]
    fds_start, threads_start = fd_count(), threading.active_count()
    emit({"event": "ready", "fds": fds_start, "threads": threads_start, "rss": rss_bytes(), "modes": modes})
    for seed in range(args.start, args.start + args.count):
        mode = args.mode or modes[seed % len(modes)]
        emit({"event": "start", "seed": seed, "mode": mode})
        record = run_guest(generate(seed, mode=mode), accel, args.timeout)
        emit({"event": "done", "record": asdict(record), "rss": rss_bytes()})
    gc.collect()
    emit({"event": "end", "fds": fd_count(), "threads": threading.active_count(), "rss": rss_bytes(),
          "peak_rss": peak_rss_bytes()})
    accel.close()  # type: ignore[attr-defined]
    return 0


@dataclass
class PoolResult:
    records: list[Record] = field(default_factory=list)
    workers: list[dict] = field(default_factory=list)  # per worker process: fds/threads/RSS at start and end

    @property
    def crashes(self) -> list[Record]:
        return [r for r in self.records if r.crashed]

    def counts(self) -> Counter[str]:
        return Counter(r.stop if r.outcome in ("stop", "refused") else f"CRASH {r.outcome}" for r in self.records)


class Pool:
    """Runs jobs in worker processes, `parallel` at a time; a worker that dies or stalls is reported with
    the seed it was running and replaced by one that goes on from the next seed."""

    def __init__(self, parallel: int = 2, stall: float = 30.0,
                 progress: Callable[[Record], None] | None = None) -> None:
        self.parallel = parallel
        self.stall = stall  # seconds without a line from a worker before it counts as hung
        self.progress = progress

    def run(self, jobs: list[Job]) -> PoolResult:
        result = PoolResult()
        pending = list(jobs)
        active: dict[int, _Running] = {}
        try:
            while pending or active:
                while pending and len(active) < self.parallel:
                    running = _Running(pending.pop(0), self.stall)
                    active[running.fd] = running
                ready, _, _ = select.select(list(active), [], [], 1.0)
                for fd in ready:
                    running = active[fd]
                    for event in running.read():
                        self._take(event, running, result)
                for fd, running in list(active.items()):
                    leftover = running.check(result)
                    if running.finished:
                        del active[fd]
                        if leftover is not None:
                            pending.insert(0, leftover)
        finally:
            for running in active.values():
                running.kill()
        return result

    def _take(self, event: dict, running: _Running, result: PoolResult) -> None:
        if event["event"] == "done":
            record = Record(**event["record"])
            result.records.append(record)
            running.max_rss = max(running.max_rss, event["rss"])
            if self.progress is not None:
                self.progress(record)
        elif event["event"] == "ready":
            running.info.update({"accel": running.job.accel, "fds_before": event["fds"],
                                 "threads_before": event["threads"], "rss_before": event["rss"]})
        elif event["event"] == "end":
            running.info.update({"fds_after": event["fds"], "threads_after": event["threads"],
                                 "rss_after": event["rss"], "peak_rss": event["peak_rss"]})
            result.workers.append(running.info)


class _Running:
    def __init__(self, job: Job, stall: float) -> None:
        self.job = job
        self.stall = stall
        argv = [sys.executable, "-m", "tests.robustness.randguest", "worker", "--accel", job.accel,
                "--start", str(job.seeds.start), "--count", str(len(job.seeds)), "--timeout", str(job.timeout)]
        if job.mode is not None:
            argv += ["--mode", job.mode]
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={**os.environ, "PYTHONFAULTHANDLER": "1"})
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buffer = b""
        self.last_line = time.monotonic()
        self.current: tuple[int, str] | None = None  # (seed, mode) being run
        self.finished = False
        self.max_rss = 0
        self.info: dict = {}

    def read(self) -> Iterator[dict]:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.proc.wait()
            return
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.last_line = time.monotonic()
            event = json.loads(line)
            if event["event"] == "start":
                self.current = (event["seed"], event["mode"])
            elif event["event"] == "done":
                self.current = None
            elif event["event"] == "end":
                self.info["max_rss"] = self.max_rss
            yield event

    def check(self, result: PoolResult) -> Job | None:
        """Notice a worker that exited or stalled; returns the rest of its job to run in a new worker."""
        code = self.proc.poll()
        stalled = code is None and time.monotonic() - self.last_line > self.stall
        if code is None and not stalled:
            return None
        if stalled:
            self.kill()
        self.finished = True
        if self.current is None and code == 0:
            return None
        seed, mode = self.current if self.current is not None else (None, "")
        stderr = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        outcome = "hang" if stalled else "died"
        how = ("stalled" if stalled else f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exited with {code}")
        if seed is None:  # died between guests (or at start-up)
            result.records.append(Record(-1, mode, "", self.job.accel, outcome, message=f"worker {how}",
                                         detail=stderr[-4000:]))
            return None
        guest = generate(seed, mode=mode or None)
        result.records.append(Record(seed, mode, guest.kind, self.job.accel, outcome,
                                     message=f"worker {how}",
                                     detail=stderr[-4000:]))
        rest = range(seed + 1, self.job.seeds.stop)
        return Job(self.job.accel, self.job.mode, rest, self.job.timeout) if len(rest) else None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def jobs_for(accels: list[str], start: int, count: int, timeout: float, chunk: int = 500) -> list[Job]:
    """`count` seeds per accelerator from `start`, in chunks of `chunk` seeds per worker process."""
    jobs = []
    for accel in accels:
        for first in range(start, start + count, chunk):
            jobs.append(Job(accel, None, range(first, min(first + chunk, start + count)), timeout))
    return jobs


def available_accels() -> list[str]:
    from minikvm.accel import kvm_unavailable

    return (["kvm"] if kvm_unavailable() is None else []) + ["emu"]


# --- command line -------------------------------------------------------------------------------------------


def _one(args: argparse.Namespace) -> int:
    guest = generate(args.seed, mode=args.mode, kind=args.kind)
    print(f"seed {guest.seed}: {guest.kind} guest, {guest.mode} mode, {guest.memory} bytes of RAM, "
          f"interrupts {'on' if guest.interrupts else 'off'}, stdin {guest.stdin!r}, "
          f"stop after {guest.stop_after}")
    if args.write:
        Path(args.write).write_bytes(guest.image)
        print(guest.command_line(args.write, args.accel, args.timeout))
    accel = make_accel(args.accel)
    record = run_guest(guest, accel, args.timeout)
    accel.close()  # type: ignore[attr-defined]
    print(json.dumps(asdict(record), indent=1))
    return 1 if record.crashed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.robustness.randguest")
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("one", help="generate and run one guest, print the record")
    one.add_argument("seed", type=int)
    one.add_argument("--mode", choices=MODES)
    one.add_argument("--kind", choices=KINDS)
    one.add_argument("--accel", choices=("kvm", "emu"), default="emu")
    one.add_argument("--timeout", type=float, default=1.0)
    one.add_argument("--write", metavar="FILE", help="also write the image to FILE")
    worker = commands.add_parser("worker", help="run seeds, JSON lines on stdout (used by Pool)")
    worker.add_argument("--accel", choices=("kvm", "emu"), required=True)
    worker.add_argument("--start", type=int, required=True)
    worker.add_argument("--count", type=int, required=True)
    worker.add_argument("--mode", choices=MODES)
    worker.add_argument("--timeout", type=float, default=0.3)
    args = parser.parse_args(argv)
    return _one(args) if args.command == "one" else _worker(args)


if __name__ == "__main__":
    sys.exit(main())

