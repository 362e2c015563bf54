"""--trace on real guests, on every accelerator this host allows for them (decided by minikvm's probes).

The last instructions in the trace must be exactly the guest's last instructions: the expected
addresses come from the guest's ELF (objdump and its symbols), following the path its source
takes at the end, never from a run of minikvm.
"""

from __future__ import annotations

import io
import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

from minikvm.arch.x86.state import Mode
from minikvm.boot.bundled import find_bundled
from minikvm.debug.gdbstub import GuestControl
from minikvm.debug.trace import InstructionTrace, kvm_debug_support, kvm_steps_at_cpl3, trace_lines
from minikvm.devices.input import InputBuffer
from minikvm.machine import Machine, MachineConfig, RunResult, run_machines
from minikvm.stop import StopKind

from .harness import ACCELERATORS, bundled_spec, kvm_limitation, make_accel

pytestmark = pytest.mark.timeout(120)


@cache
def listing(elf: Path, mode: Mode) -> tuple[list[int], dict[str, int]]:
    """Instruction addresses in order, and the symbols, from objdump's disassembly of the ELF."""
    real = ["-m", "i8086"] if mode is Mode.REAL else []  # the ELF says i386; the code is 16-bit
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", *real, str(elf)], check=True,
                          capture_output=True, text=True).stdout
    addresses = [int(m.group(1), 16) for m in re.finditer(r"^\s+([0-9a-f]+):\t", text, re.MULTILINE)]
    symbols = {m.group(2): int(m.group(1), 16) for m in re.finditer(r"^([0-9a-f]+) <(\w+)>:$", text, re.MULTILINE)}
    return addresses, symbols


def at(name: str, symbol: str, index: int) -> int:
    """The address of the instruction `index` instructions after (negative: before) `symbol` in a guest."""
    guest = find_bundled(name)
    assert guest is not None
    addresses, symbols = listing(guest.path.with_suffix(".elf"), guest.mode)
    return addresses[addresses.index(symbols[symbol]) + index]


# How each guest ends, from its source: (symbol, instruction offset) for its last instructions.
FINAL_PATHS = {
    # ... out; jmp next_char; next_char: lodsb; test; jz done; done: hlt
    "hello": [("done", -2), ("done", -1), ("next_char", 0), ("next_char", 1), ("next_char", 2), ("done", 0)],
    # uart_putc's ret; jmp next_char; lodsb; test; jz done; done: mov $EXIT,%al; xor %bl,%bl; mov $port,%dx; out
    "hello_pm": [("msg", -1), ("done", -1), ("next_char", 0), ("next_char", 1), ("next_char", 2),
                 ("done", 0), ("done", 1), ("done", 2), ("done", 3)],
    # out; jmp next_char; lodsb; test; jz done; done: mov $EXIT,%al; xor %bl,%bl; out
    "hello_64": [("done", -2), ("done", -1), ("next_char", 0), ("next_char", 1), ("next_char", 2),
                 ("done", 0), ("done", 1), ("done", 2)],
}
LAST = {"hello": "halt", "hello_pm": "exit hypercall", "hello_64": "exit hypercall"}


def traceable(accel: str, mode: Mode) -> None:
    """Skip (saying why) where this host cannot trace such a guest on `accel`."""
    if accel != "kvm":
        return
    reason = kvm_limitation(mode)
    if reason is not None:
        pytest.skip(reason)
    if not kvm_debug_support(mode).single_step:
        pytest.skip(f"this host's KVM cannot single-step {mode.label}")


def run_traced(name: str, accel: str, depth: int, file: io.StringIO | None = None,
               notes: list[str] | None = None) -> tuple[RunResult, list[str], bytes]:
    spec = bundled_spec(name)
    root = make_accel(accel)
    output = bytearray()
    buffer = InputBuffer()
    buffer.close()
    machine = Machine(MachineConfig(spec), root, output.extend, buffer)
    try:
        trace = InstructionTrace(depth, file)
        note = notes.append if notes is not None else None
        machine.loop.debugger = GuestControl(machine, 1, trace=trace, note=note)
        result = run_machines([machine], timeout=60)[0]
        lines = trace_lines(machine)
    finally:
        machine.close()
        root.close()
    return result, lines, bytes(output)


def addresses_of(lines: list[str]) -> list[int]:
    return [int(line.split()[0], 16) for line in lines if re.match(r"^\s+[0-9a-f]{8,16}\s", line)]


@pytest.mark.parametrize("accel", ACCELERATORS)
@pytest.mark.parametrize("name", sorted(FINAL_PATHS))
def test_the_last_instructions_are_the_guests_last(name: str, accel: str) -> None:
    guest = find_bundled(name)
    assert guest is not None
    traceable(accel, guest.mode)
    expected = [at(name, symbol, index) for symbol, index in FINAL_PATHS[name]]
    result, lines, output = run_traced(name, accel, len(expected))
    report = "\n".join(lines)
    assert result.stop.clean, (result.stop, report)
    assert output.endswith(b"!\n"), output
    assert lines[0].startswith(f"the last {len(expected)} instructions executed"), report
    assert addresses_of(lines) == expected, report
    assert lines[-1].endswith(f"({LAST[name]})"), report


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_the_trace_shows_the_registers_each_instruction_changed(accel: str) -> None:
    traceable(accel, Mode.PROTECTED)
    _, lines, _ = run_traced("hello_pm", accel, 4)
    by_address = {int(line.split()[0], 16): line for line in lines[1:]}
    assert by_address[at("hello_pm", "done", 2)].split()[-1] == "edx=0x500"  # mov $HC_PORT, %dx
    assert "mov dx, 0x500" in by_address[at("hello_pm", "done", 2)]
    assert by_address[at("hello_pm", "done", 0)].rstrip().endswith("mov al, 0")  # AL was 0 already


def test_both_accelerators_trace_the_same_instructions() -> None:
    """A differential run: every instruction of hello_pm and hello_64, in order, on KVM and the software CPU."""
    for name in ("hello_pm", "hello_64"):
        guest = find_bundled(name)
        assert guest is not None
        traceable("kvm", guest.mode)
        files = {accel: io.StringIO() for accel in ACCELERATORS}
        for accel, file in files.items():
            run_traced(name, accel, 0, file)
        kvm, emu = (addresses_of(["  " + line for line in files[a].getvalue().splitlines()]) for a in ACCELERATORS)
        assert len(kvm) > 100 and kvm == emu, name


def test_a_cpl3_task_is_not_stepped_where_kvm_cannot_and_the_guest_is_unharmed() -> None:
    """kvm-pvm delivers a CPL3 single-step's #DB into the guest (a triple fault): the trace must pause."""
    traceable("kvm", Mode.LONG)
    if kvm_steps_at_cpl3(True):
        pytest.skip("this host's KVM single-steps 64-bit CPL3 code: the trace has nothing to pause for")
    notes: list[str] = []
    result, lines, output = run_traced("primes_64", "kvm", 40, notes=notes)
    assert result.stop.kind is StopKind.EXIT_HYPERCALL, result.stop
    assert output.startswith(b"primes below"), output
    assert len(notes) == 1 and "cannot single-step CPL3" in notes[0], notes
    report = "\n".join(lines)
    assert "iretq into CPL3 code" in report and "traced again" in report, report
    assert lines[-1].endswith("(exit hypercall)"), report
