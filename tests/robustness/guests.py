"""Small hostile guests for the robustness tests, assembled with binutils from the sources here.

Each is 32-bit protected-mode code (loaded and entered at 0x1000, ABI.md),
which both accelerators run on this host and on VMX/SVM hosts alike.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

LOAD = 0x1000

_EXIT = """
  mov $0x500, %dx
  mov $0, %al
  out %al, %dx            # EXIT hypercall
  hlt
"""

# N bytes i & 0xff (i = 0, 1, ...) to PORT: the UART's THR (0x3f8) or PUTCHAR (0x500, argument in BL).
FLOOD = """
.code32
.globl _start
_start:
  mov $N, %ecx
  xor %ebx, %ebx
1:
  mov $PORT, %dx
  mov %bl, %al
  cmp $0x500, %dx
  jne 2f
  mov $1, %al             # PUTCHAR, BL = the byte
2:
  out %al, %dx
  inc %ebx
  .if FOREVER
  jmp 1b
  .else
  loop 1b
  .endif
""" + _EXIT

# N pairs: byte 2k through the UART, byte 2k+1 through PUTCHAR; the output must be 0, 1, 2, ... mod 256.
INTERLEAVED = """
.code32
.globl _start
_start:
  mov $N, %ecx
  xor %ebx, %ebx
1:
  mov $0x3f8, %dx
  mov %bl, %al
  out %al, %dx            # UART THR (KVM may coalesce these)
  inc %ebx
  mov $0x500, %dx
  mov $1, %al
  out %al, %dx            # PUTCHAR BL (always an exit)
  inc %ebx
  loop 1b
""" + _EXIT

# Every port but the ones that end the guest (hypercall 0x500, debug exit 0xf4-0xf7): IN, then OUT 0.
PORT_STORM = """
.code32
.globl _start
_start:
  mov $ROUNDS, %edi
0:
  xor %edx, %edx
1:
  cmp $0x500, %dx
  je 2f
  mov %dx, %ax
  and $0xfffc, %ax
  cmp $0xf4, %ax
  je 2f
  in %dx, %al
  xor %al, %al
  out %al, %dx
2:
  inc %dx
  jnz 1b
  .if FOREVER
  jmp 0b
  .else
  dec %edi
  jnz 0b
  .endif
""" + _EXIT

# GETCHAR until a byte comes; with FOREVER, poll on and on whatever comes.
GETCHAR_POLL = """
.code32
.globl _start
_start:
  mov $0x500, %dx
1:
  mov $2, %al
  out %al, %dx            # GETCHAR
  in %dx, %al
  .if FOREVER
  jmp 1b
  .else
  cmp $0xff, %al
  je 1b
  .endif
""" + _EXIT

# Ports stormed with string I/O: rep outsb/insb of COUNT bytes to a port nobody claims, forever or ROUNDS times.
STRING_STORM = """
.code32
.globl _start
_start:
  mov $ROUNDS, %edi
0:
  mov $0x2000, %esi
  mov $0x3000, %ebx
  mov $0x1234, %dx
  mov $COUNT, %ecx
  rep outsb
  xchg %ebx, %edi
  mov $COUNT, %ecx
  rep insb
  xchg %ebx, %edi
  .if FOREVER
  jmp 0b
  .else
  dec %edi
  jnz 0b
  .endif
""" + _EXIT


def assemble(directory: Path, name: str, source: str, **symbols: int) -> Path:
    """Assemble `source` with `--defsym` for each symbol into DIRECTORY/NAME.bin and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    src, obj, elf, binary = (directory / f"{name}{suffix}" for suffix in (".S", ".o", ".elf", ".bin"))
    src.write_text(source)
    defsyms = [arg for key, value in {"FOREVER": 0, **symbols}.items() for arg in ("--defsym", f"{key}={value}")]
    for argv in (["as", "--32", *defsyms, "-o", str(obj), str(src)],
                 ["ld", "-m", "elf_i386", f"-Ttext={LOAD:#x}", "-e", "_start", "-o", str(elf), str(obj)],
                 ["objcopy", "-O", "binary", "-j", ".text", str(elf), str(binary)]):
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr}")
    return binary


def counter_bytes(count: int) -> bytes:
    """What the flood and interleaved guests print: 0, 1, 2, ... 255, 0, 1, ..."""
    return bytes(range(256)) * (count // 256) + bytes(range(count % 256))
