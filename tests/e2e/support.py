"""What the end-to-end tests share: the installed commands, tiny guests, expected outputs.

Expected guest outputs are computed here from what each bundled guest's source
says it computes (guests/*.S), never copied from a run of minikvm.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# ABI.md: hypercall port 0x500; AL = number, BL = argument.
HC_EXIT, HC_PUTCHAR, HC_GETCHAR = 0, 1, 2

# --- tiny real-mode guests, hand-assembled (loaded at 0, entered at 0:0) -----

SPIN = bytes([
    0xEB, 0xFE,              # 00: jmp $                  ; forever, no exit
])

SPIN_AFTER_READY = bytes([
    0xBA, 0x00, 0x05,        # 00: mov dx, 0x500
    0xB0, HC_PUTCHAR,        # 03: mov al, PUTCHAR
    0xB3, ord("R"),          # 05: mov bl, 'R'
    0xEE,                    # 07: out dx, al             ; "R"
    0xB3, ord("\n"),         # 08: mov bl, '\n'
    0xEE,                    # 0a: out dx, al             ; "\n": the guest is running
    0xEB, 0xFE,              # 0b: jmp $                  ; then spin forever
])
READY_OUTPUT = b"R\n"

POLL_FOREVER = bytes([
    0xBA, 0x00, 0x05,        # 00: mov dx, 0x500
    0xB0, HC_GETCHAR,        # 03: mov al, GETCHAR
    0xEE,                    # 05: out dx, al
    0xEC,                    # 06: in al, dx              ; 0xff: no input yet
    0x3C, 0xFF,              # 07: cmp al, 0xff
    0x74, 0xF5,              # 09: je 0x00                ; poll again
    0xF4,                    # 0b: hlt                    ; got a byte (never, at EOF)
])

ECHO_UNTIL_Q = bytes([
    0xBA, 0x00, 0x05,        # 00: mov dx, 0x500
    0xB0, HC_GETCHAR,        # 03: mov al, GETCHAR        ; loop:
    0xEE,                    # 05: out dx, al
    0xEC,                    # 06: in al, dx
    0x3C, 0xFF,              # 07: cmp al, 0xff           ; nothing yet?
    0x74, 0xF8,              # 09: je 0x03                ;   ask again
    0x3C, ord("q"),          # 0b: cmp al, 'q'
    0x74, 0x07,              # 0d: je 0x16                ; 'q' ends the echo
    0x88, 0xC3,              # 0f: mov bl, al
    0xB0, HC_PUTCHAR,        # 11: mov al, PUTCHAR
    0xEE,                    # 13: out dx, al             ; echo the byte
    0xEB, 0xED,              # 14: jmp 0x03
    0x31, 0xDB,              # 16: xor bx, bx
    0xB0, HC_EXIT,           # 18: mov al, EXIT
    0xEE,                    # 1a: out dx, al
    0xF4,                    # 1b: hlt                    ; not reached
])


# 32-bit code for ABI.md's --paging layout (loaded at 0x1000, entered at 0x80001000).
PAGING_HELLO = bytes([
    0x66, 0xBA, 0x00, 0x05,  # 00: mov dx, 0x500
    0xB0, HC_PUTCHAR,        # 04: mov al, PUTCHAR
    0xB3, ord("P"),          # 06: mov bl, 'P'
    0xEE,                    # 08: out dx, al
    0xB3, ord("\n"),         # 09: mov bl, '\n'
    0xEE,                    # 0b: out dx, al
    0xF4,                    # 0c: hlt
])
PAGING_HELLO_OUTPUT = b"P\n"
PAGING_ENTRY = 0x80001000  # ABI.md: --entry default for --paging


def echo_output(data: bytes) -> bytes:
    """What ECHO_UNTIL_Q prints when fed `data`."""
    end = data.find(b"q")
    return data if end < 0 else data[:end]


# --- the bundled guests' outputs, computed from their sources -----------------


def _multiplication(rows: range) -> bytes:
    return ("".join(f"{i}x{j}={i * j} " for i in rows for j in range(1, 10)) + "\n").encode()


def _fibonacci(count: int = 15) -> bytes:
    numbers, a, b = [], 0, 1
    for _ in range(count):
        numbers.append(a)
        a, b = b, a + b
    return ("Fibonacci: " + ", ".join(map(str, numbers)) + "\n").encode()


def _matrix(n: int = 8) -> bytes:
    a = [[i + j + 1 for j in range(n)] for i in range(n)]
    b = [[(i * n + j) % 7 for j in range(n)] for i in range(n)]
    c = [[sum(a[i][k] * b[k][j] for k in range(n)) for j in range(n)] for i in range(n)]
    lines = [f"Matrix C = A x B ({n}x{n}):"]
    lines += [" ".join(map(str, row)) for row in c]
    lines.append(f"trace = {sum(c[i][i] for i in range(n))}")
    return ("\n".join(lines) + "\n").encode()


def _primes(limit: int = 1_000_000) -> bytes:
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\x00\x00"
    for p in range(2, int(limit**0.5) + 1):
        if sieve[p]:
            sieve[p * p::p] = bytes(len(range(p * p, limit, p)))
    primes = [i for i in range(limit) if sieve[i]]
    return f"primes below {limit}: {len(primes)}, sum {sum(primes)}\n".encode()


EXPECTED: dict[str, Callable[[], bytes]] = {
    "minimal": lambda: b"",
    "hello": lambda: b"Hello, KVM!\n",
    "counter": lambda: ("".join(str(d) for d in range(10)) + "\n").encode(),
    "multiplication": lambda: _multiplication(range(2, 10)),
    "multiplication_short": lambda: _multiplication(range(2, 3)),
    "fibonacci": _fibonacci,
    "matrix": _matrix,
    "hctest": lambda: b"Hello!\n",
    "hello_pm": lambda: b"Hello from protected mode!\n",
    "hello_64": lambda: b"Hello from 64-bit!\n",
    "primes_64": _primes,
}


def expected_output(guest: str) -> bytes:
    return EXPECTED[guest]()


# --- where things are -----------------------------------------------------------


def command(name: str) -> str:
    """An installed console script: beside this Python (the venv), else the repo's .venv, else PATH."""
    for candidate in (Path(sys.prefix) / "bin" / name, REPO / ".venv" / "bin" / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"the '{name}' command is not installed: run 'make .venv/.installed'")
    return found


def guests_dir() -> Path:
    """Where minikvm finds its bundled guests ($MINIKVM_GUESTS, else guests/build)."""
    return Path(os.environ.get("MINIKVM_GUESTS") or REPO / "guests" / "build")


def bundled_image(name: str, suffix: str = ".bin") -> Path:
    path = guests_dir() / f"{name}{suffix}"
    if not path.exists():
        pytest.fail(f"{path} is missing: run 'make guests'")
    return path


def guest_sources() -> dict[str, str]:
    """Every guest the Makefile builds → its mode (real/protected/long), from guests/Makefile."""
    text = (REPO / "guests" / "Makefile").read_text().replace("\\\n", " ")
    modes = {"REAL16": "real", "PROT32": "protected", "LONG64": "long"}
    result: dict[str, str] = {}
    for variable, mode in modes.items():
        match = re.search(rf"^{variable}\s*:=(.*)$", text, re.MULTILINE)
        assert match, f"guests/Makefile has no {variable}"
        result.update(dict.fromkeys(match.group(1).split(), mode))
    return result


def symbol_address(elf: Path, symbol: str) -> int:
    """A symbol's address in a guest's ELF, by nm: tests never hard-code guest addresses."""
    out = subprocess.run(["nm", str(elf)], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == symbol:
            return int(parts[0], 16)
    raise AssertionError(f"{symbol} not in {elf}")


def run(program: str, *args: str, stdin: bytes = b"", timeout: float = 30,
        **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """Run an installed command with stdin, stdout and stderr on pipes (stdin is `stdin`, then EOF)."""
    return subprocess.run([command(program), *args], input=stdin, capture_output=True,  # type: ignore[call-overload]
                          timeout=timeout, **kwargs)


# --- reading what minikvm said ---------------------------------------------------

STOP_LINE = re.compile(r"^(?P<name>[^\s:\[\]]+): (?P<what>.*\bexits\b.*)$")


def stop_lines(stderr: bytes) -> dict[str, str]:
    """name → the rest of its stop line ('halted (HLT) at 0x17 after 13 exits, 0.4 ms')."""
    lines: dict[str, str] = {}
    for line in stderr.decode(errors="replace").splitlines():
        match = STOP_LINE.match(line)
        if match:
            assert match["name"] not in lines, f"two stop lines for {match['name']}:\n{stderr.decode()}"
            lines[match["name"]] = match["what"]
    return lines


def split_prefixed(stdout: bytes) -> dict[str, bytes]:
    """Several guests' stdout → each guest's own output; every line must start with '[name] '."""
    outputs: dict[str, bytes] = {}
    for line in stdout.splitlines(keepends=True):
        match = re.match(rb"\[([^\]\s]+)\] ", line)
        assert match, f"a line of stdout without a '[name] ' prefix: {line!r}\nstdout: {stdout!r}"
        name = match[1].decode()
        outputs[name] = outputs.get(name, b"") + line[match.end():]
    return outputs


def describe(proc: subprocess.CompletedProcess[bytes]) -> str:
    """For assertion messages: what the command did."""
    return (f"command: {proc.args}\nstatus: {proc.returncode}\n"
            f"stdout: {proc.stdout!r}\nstderr:\n{proc.stderr.decode(errors='replace')}")
