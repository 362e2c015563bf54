"""Running real guests in-process on the real accelerator, with their output captured."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from minikvm.accel import AcceleratorError, choose
from minikvm.arch.x86.state import Mode
from minikvm.boot import layout
from minikvm.boot.bundled import BundledGuest, find_bundled
from minikvm.debug.report import stop_line, stop_report
from minikvm.devices.input import InputBuffer
from minikvm.emu.cpu import Emu
from minikvm.emu.delivery import ChainLink
from minikvm.kvm.system import Kvm
from minikvm.machine import GuestSpec, Machine, MachineConfig, RunResult, run_machines


@dataclass
class Outcome:
    result: RunResult
    output: bytes
    chain: list[ChainLink] = field(default_factory=list)  # the software CPU's exception chain

    def explain(self) -> str:
        """Shown when an assertion fails: the guest output and the stop report."""
        return "\n".join([f"output: {self.output!r}", stop_line(self.result), *self.report])

    @property
    def report(self) -> list[str]:
        return stop_report(self.result)


def default_memory(mode: Mode) -> int:
    return layout.REAL_MEMORY if mode is Mode.REAL else layout.PM_MEMORY


def spec_for(name: str, image: bytes, mode: Mode, memory: int | None = None) -> GuestSpec:
    return GuestSpec(name, f"<{name}>", image, mode, memory or default_memory(mode))


def bundled_spec(name: str) -> GuestSpec:
    guest: BundledGuest | None = find_bundled(name)
    assert guest is not None, name
    if not guest.path.exists():
        pytest.fail(f"bundled guest {name} is not built: run 'make guests'")
    return spec_for(name, guest.path.read_bytes(), guest.mode)


ACCELERATORS = ("kvm", "emu")


def kvm_limitation(mode: Mode, interrupts: bool = False) -> str | None:
    """Why this host's KVM cannot run such a guest (measured by minikvm's probe), or None."""
    try:
        choose("kvm", mode, interrupts)
    except AcceleratorError as err:
        return str(err)
    return None


def make_accel(name: str) -> Kvm | Emu:
    """The accelerator's root object by name: "kvm" or "emu" (the software CPU)."""
    return Kvm() if name == "kvm" else Emu()


def run_specs(specs: list[GuestSpec], stdin: bytes | None = b"", timeout: float = 60,
              grace: float = 0.2, accel: str = "kvm") -> list[Outcome]:
    """Run guests in parallel, one VM each; `stdin` goes to the first guest (None: input stays open)."""
    return [outcome for outcome, _ in run_specs_inspected(specs, lambda machine, result: None, stdin=stdin,
                                                          timeout=timeout, grace=grace, accel=accel)]


Inspected = TypeVar("Inspected")


def run_specs_inspected(specs: list[GuestSpec], inspect: Callable[[Machine, RunResult], Inspected],
                        stdin: bytes | None = b"", timeout: float = 60, grace: float = 0.2,
                        accel: str = "kvm") -> list[tuple[Outcome, Inspected]]:
    """As run_specs, and `inspect(machine, result)` for each guest once all have stopped, before its
    machine is closed (its memory and vCPU still readable: e.g. to build the fault explanation)."""
    root = make_accel(accel)
    outputs: list[bytearray] = [bytearray() for _ in specs]
    machines: list[Machine] = []
    try:
        for index, spec in enumerate(specs):
            buffer = InputBuffer()
            if index == 0 and stdin is not None:
                buffer.feed(stdin)
            if index > 0 or stdin is not None:
                buffer.close()
            machines.append(Machine(MachineConfig(spec, input_grace=grace), root, outputs[index].extend, buffer))
        results = run_machines(machines, timeout=timeout)
        chains = [list(getattr(machine.vcpu, "chain", [])) for machine in machines]  # the software CPU's
        inspected = [inspect(machine, result) for machine, result in zip(machines, results, strict=True)]
    finally:
        for machine in machines:
            machine.close()
        root.close()
    return [(Outcome(r, bytes(o), c), i) for r, o, c, i in zip(results, outputs, chains, inspected, strict=True)]


def run_one(spec: GuestSpec, **kwargs: object) -> Outcome:
    return run_specs([spec], **kwargs)[0]  # type: ignore[arg-type]


def symbol_address(elf: Path, symbol: str) -> int:
    """A symbol's address from the guest's ELF (nm), so tests do not hard-code addresses."""
    out = subprocess.run(["nm", str(elf)], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == symbol:
            return int(parts[0], 16)
    raise AssertionError(f"{symbol} not in {elf}")


def assemble(tmp_path: Path, source: str, bits: int, load: int = 0) -> bytes:
    """Assemble a tiny test guest with binutils into a flat binary."""
    src = tmp_path / "guest.S"
    src.write_text(source)
    obj, elf, binary = tmp_path / "guest.o", tmp_path / "guest.elf", tmp_path / "guest.bin"
    as_flag, ld_emul = ("--64", "elf_x86_64") if bits == 64 else ("--32", "elf_i386")
    subprocess.run(["as", as_flag, "-o", str(obj), str(src)], check=True)
    subprocess.run(["ld", "-m", ld_emul, f"-Ttext={load:#x}", "-o", str(elf), str(obj)], check=True)
    subprocess.run(["objcopy", "-O", "binary", str(elf), str(binary)], check=True)
    return binary.read_bytes()
