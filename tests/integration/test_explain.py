"""The fault explainer, checked against deliberately broken guests (guests/broken/).

Each guest dies of exactly one cause; its test runs it and asserts what
minikvm.debug.explain says about it: the headline (first exception, where,
why its delivery failed, the chain to the shutdown), the "why" lines from
the cause catalogue, and the "where" listing. Addresses come from the
guest's ELF symbols (and objdump), never from the test.

Every guest runs on every accelerator the host allows, decided by minikvm's
own probes (minikvm.accel), never hard-coded: the software CPU always, KVM
where the probe says KVM can run the guest's mode (and a CPL0 IRET, for the
guests that enter ring 3 with one). Where it cannot, the KVM case asserts
that asking for KVM is refused with the host's limitation named. KVM reports
a triple fault as a bare SHUTDOWN, so on KVM the explainer replays the run on
the software CPU to get the exception chain, and the report's note says so.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from minikvm.accel import INTERRUPT_PROBE, MODE_PROBE, AcceleratorError, choose, kvm_cannot_run
from minikvm.arch.x86.state import Mode
from minikvm.boot.bundled import guests_dir
from minikvm.debug.explain import explain
from minikvm.debug.symbols import SymbolTable
from minikvm.machine import Machine, RunResult
from minikvm.stop import StopKind

from .harness import ACCELERATORS, Outcome, bundled_spec, run_specs_inspected, spec_for, symbol_address

SECTIONS = ("why:", "where:", "state:")
REPLAY_NOTE = ("replayed", "software CPU")  # words of the note on a KVM triple fault explained by a replay


@pytest.fixture(autouse=True)
def _needs_kvm(request: pytest.FixtureRequest) -> None:
    """Only the KVM cases need /dev/kvm (skip, or fail under MINIKVM_REQUIRE_KVM); the software CPU runs anywhere."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("accel") == "kvm":
        request.getfixturevalue("kvm_required")


# --- the guests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Broken:
    name: str
    mode: Mode
    iret: bool = False  # it IRETs at CPL0 (to enter ring 3): accel.choose's `interrupts` probe applies

    @property
    def path(self) -> Path:
        return guests_dir() / f"{self.name}.bin"

    @property
    def elf(self) -> Path:
        return self.path.with_suffix(".elf")

    def symbol(self, name: str) -> int:
        return symbol_address(self.elf, name)


GUESTS = {g.name: g for g in [
    Broken("broken_sse_trap", Mode.PAGING),
    Broken("broken_idt_limit", Mode.PROTECTED),
    # UD2, not INT3: kvm-pvm's emulator cannot execute INT3 at CPL0 (KVM_EXIT_INTERNAL_ERROR) and minikvm has
    # no probe for it, so an INT3 here would test the host instead of the explainer on KVM.
    Broken("broken_gate_not_present", Mode.PROTECTED),
    Broken("broken_bad_selector", Mode.PROTECTED),
    Broken("broken_pf_not_present", Mode.PAGING),
    Broken("broken_pf_readonly", Mode.PAGING),
    Broken("broken_pf_user_super", Mode.PAGING, iret=True),
    Broken("broken_pf_user_super_handler", Mode.PAGING, iret=True),
    Broken("broken_pse_off", Mode.PAGING),
    Broken("broken_stack_unmapped", Mode.PAGING),
    Broken("broken_stack_zero", Mode.PAGING),
    Broken("broken_stack_frame", Mode.PAGING),
    Broken("broken_noncanonical", Mode.LONG),
    Broken("broken_privileged", Mode.PROTECTED, iret=True),
    Broken("broken_privileged_64", Mode.LONG, iret=True),
    Broken("broken_syscall_dpl", Mode.PROTECTED, iret=True),
    Broken("broken_divide", Mode.PROTECTED),
    Broken("broken_divide_overflow", Mode.PROTECTED),
    Broken("broken_kvm_iret", Mode.PROTECTED),  # its IRET is the point: KVM runs it wherever the mode runs
    Broken("broken_kvm_sse", Mode.PROTECTED),
]}
TRIPLE_FAULTING = sorted(set(GUESTS) - {"broken_kvm_iret", "broken_kvm_sse"})


def host_limitation(guest: Broken) -> str | None:
    """What this host's KVM lacks for `guest`, from minikvm's probes; None when KVM can run it."""
    reason = kvm_cannot_run(MODE_PROBE[guest.mode])
    if reason is None and guest.iret and guest.mode in INTERRUPT_PROBE:
        reason = kvm_cannot_run(INTERRUPT_PROBE[guest.mode])
    return reason


# --- the report -----------------------------------------------------------------------------------


@dataclass
class Report:
    """explain()'s lines, split into their parts."""

    outcome: Outcome
    lines: list[str]
    headline: str = ""
    sections: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)  # lines that are no headline, section title, item or note

    def __post_init__(self) -> None:
        flat = [part for line in self.lines for part in line.split("\n")]
        self.headline = flat[0] if flat else ""
        current: str | None = None
        for line in flat[1:]:
            if line in SECTIONS:
                current = line.removesuffix(":")
                self.sections[current] = []
            elif line.startswith("note: "):
                self.notes.append(line.removeprefix("note: "))
            elif line.startswith("  ") and current is not None:
                self.sections[current].append(line[2:])
            else:
                self.stray.append(line)
                if current is not None:
                    self.sections[current].append(line)  # its content still counts

    @property
    def why(self) -> list[str]:
        return self.sections.get("why", [])

    @property
    def where(self) -> list[str]:
        return self.sections.get("where", [])

    @property
    def stop(self) -> StopKind:
        return self.outcome.result.stop.kind

    def show(self) -> str:
        return "\n".join([f"output: {self.outcome.output!r}", f"stop: {self.outcome.result.stop}", *self.lines])

    def why_line(self, *words: str) -> str:
        """The first why line holding every one of `words` (case-insensitive); fails with the report."""
        for line in self.why:
            if all(word.lower() in line.lower() for word in words):
                return line
        raise AssertionError(f"no why line mentions all of {words}:\n{self.show()}")

    def cursor(self) -> str:
        """The where line of the faulting instruction ('=> 0x… <symbol>: bytes text')."""
        marked = [line for line in self.where if line.startswith("=>")]
        assert len(marked) == 1, self.show()
        return marked[0]


def run_explained(guest: Broken, accel: str, cr4: int | None = None, timeout: float = 10) -> Report | None:
    """Run `guest` on `accel` and explain its end; None when KVM cannot run it here (after checking that
    asking for KVM is refused, with the probe's reason)."""
    if not guest.path.exists():
        pytest.fail(f"{guest.path} is not built: run 'make -C guests/broken'")
    if accel == "kvm":
        limitation = host_limitation(guest)
        if limitation is not None:
            with pytest.raises(AcceleratorError) as refused:
                choose("kvm", guest.mode, guest.iret)
            message = str(refused.value)
            assert "cannot run" in message and limitation in message, message
            return None
        assert choose("kvm", guest.mode, guest.iret).name == "kvm"
    spec = dataclasses.replace(spec_for(guest.name, guest.path.read_bytes(), guest.mode), cr4=cr4)
    symbols = SymbolTable.from_elf(guest.elf)

    def explained(machine: Machine, result: RunResult) -> list[str]:
        return explain(machine, result, lambda: symbols)

    [(outcome, lines)] = run_specs_inspected([spec], explained, accel=accel, timeout=timeout)
    return Report(outcome, lines)


def expect_triple(report: Report, accel: str, first: str, at: int, insn: str | None, then: list[str]) -> None:
    """A triple fault whose headline is '<first> at <at> (<insn>…) could not be delivered: … → <then…> → shutdown',
    with the where listing on `at`, and on KVM the note that the chain comes from a replay."""
    assert report.stop is StopKind.TRIPLE_FAULT, report.show()
    start = f"triple fault: {first} at {at:#x}" + (f" ({insn}" if insn else " could not be delivered: ")
    assert report.headline.startswith(start), f"expected the headline to start with {start!r}\n{report.show()}"
    assert "could not be delivered: " in report.headline, report.show()
    assert report.headline.split(" → ")[1:] == [*then, "shutdown"], report.show()
    if insn is not None:
        assert f"{at:#010x}" in report.cursor(), report.show()
    if accel == "kvm":
        assert any(all(word in note for word in REPLAY_NOTE) for note in report.notes), report.show()


@cache
def objdump(elf: Path) -> dict[int, tuple[bytes, str]]:
    """Every instruction objdump decodes in the ELF: address -> (bytes, Intel-syntax text)."""
    args = ["objdump", "-d", "-M", "intel", "--insn-width=16", str(elf)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        match = re.match(r"^\s*([0-9a-f]+):\t((?:[0-9a-f]{2} )+)\s*\t?(.*)$", line)
        if match:
            found[int(match[1], 16)] = (bytes.fromhex(match[2]), " ".join(match[3].split()))
    return found


def symbol_range(elf: Path, name: str) -> range:
    """[start, end) of a function symbol (nm -S)."""
    out = subprocess.run(["nm", "-S", str(elf)], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3] == name:
            return range(int(parts[0], 16), int(parts[0], 16) + int(parts[1], 16))
    raise AssertionError(f"{name} has no size in {elf}")


accelerators = pytest.mark.parametrize("accel", ACCELERATORS)


# --- 1. the SSE trap --------------------------------------------------------------------------------


def first_sse_instruction(guest: Broken) -> tuple[int, str]:
    """The first SSE instruction of kernel_main (which runs memset, inlined, first): address, mnemonic."""
    code = objdump(guest.elf)
    for address in symbol_range(guest.elf, "kernel_main"):
        if address in code and "xmm" in code[address][1]:
            return address, code[address][1].split()[0]
    raise AssertionError("GCC did not vectorise kernel_main: broken_sse_trap no longer tests the SSE trap")


@accelerators
def test_sse_trap_with_raw_cr4_names_osfxsr(accel: str) -> None:
    """ABI.md's SSE trap: CR4 = 0, GCC's SSE memset → #UD → #GP → #DF → shutdown, before any output."""
    guest = GUESTS["broken_sse_trap"]
    report = run_explained(guest, accel, cr4=0)
    if report is None:
        return
    address, mnemonic = first_sse_instruction(guest)
    assert report.outcome.output == b"", report.show()
    expect_triple(report, accel, "#UD", address, mnemonic, ["#GP(0x32)", "#DF"])
    report.why_line("CR4.OSFXSR=0", mnemonic)


@accelerators
def test_sse_trap_kernel_runs_with_default_cr4(accel: str) -> None:
    """The control: the same kernel with minikvm's default CR4 (OSFXSR|OSXMMEXCPT) runs to its EXIT."""
    report = run_explained(GUESTS["broken_sse_trap"], accel)
    if report is None:
        return
    assert report.outcome.output == b"sse_trap: kernel up\n", report.show()
    assert report.stop is StopKind.EXIT_HYPERCALL, report.show()


# --- 2-4. descriptor tables ------------------------------------------------------------------------


@accelerators
def test_idt_limit_too_small(accel: str) -> None:
    """IDTR.limit = 31 (entries, not bytes): #UD's gate 6 is beyond it."""
    guest = GUESTS["broken_idt_limit"]
    report = run_explained(guest, accel)
    if report is None:
        return
    expect_triple(report, accel, "#UD", guest.symbol("bad_ud2"), "ud2", ["#GP(0x32)", "#DF"])
    report.why_line("vector 0x6", "IDT limit 0x1f")


@accelerators
def test_gate_not_present(accel: str) -> None:
    """Every gate written as 0x0E00 (P=0): #UD → #NP(gate 6) → #DF → shutdown."""
    guest = GUESTS["broken_gate_not_present"]
    report = run_explained(guest, accel)
    if report is None:
        return
    expect_triple(report, accel, "#UD", guest.symbol("bad_ud2"), "ud2", ["#NP(0x32)", "#DF"])
    report.why_line("gate 0x6", "not present")


@accelerators
def test_bad_selector_beyond_gdt_limit(accel: str) -> None:
    """MOV DS with selector 0x80 and a 5-entry GDT (limit 0x27): #GP(0x80) (SDM: MOV, #GP(selector))."""
    guest = GUESTS["broken_bad_selector"]
    report = run_explained(guest, accel)
    if report is None:
        return
    expect_triple(report, accel, "#GP(0x80)", guest.symbol("bad_mov_ds"), "mov ds", ["#DF"])
    report.why_line("ds", "selector 0x80", "GDT", "limit 0x27")


# --- 5-9. paging and the stack ------------------------------------------------------------------------


def walk_indices(address: int) -> tuple[str, str]:
    """How the explainer's walk line names the 32-bit PDE and PTE for `address`."""
    return f"PDE[{address >> 22:#05x}]", f"PTE[{(address >> 12) & 0x3FF:#05x}]"


@accelerators
def test_pf_not_present_shows_the_walk(accel: str) -> None:
    """A read of a page whose PTE has P=0: #PF(0) with CR2 and the walk down to that PTE."""
    guest = GUESTS["broken_pf_not_present"]
    report = run_explained(guest, accel)
    if report is None:
        return
    page = guest.symbol("page_np")
    expect_triple(report, accel, "#PF(0x0)", guest.symbol("bad_read"), "mov", ["#DF"])
    report.why_line(f"CR2={page:#x}", "not present", "read", "supervisor")
    report.why_line(*walk_indices(page), "not present")


@accelerators
def test_pf_write_to_readonly_page_with_wp(accel: str) -> None:
    """CR0.WP=1 and a PTE with R/W=0: a kernel write gives #PF(0x3)."""
    guest = GUESTS["broken_pf_readonly"]
    report = run_explained(guest, accel)
    if report is None:
        return
    page = guest.symbol("page_ro")
    expect_triple(report, accel, "#PF(0x3)", guest.symbol("bad_write"), "mov", ["#DF"])
    report.why_line(f"CR2={page:#x}", "protection violation", "write")
    report.why_line(*walk_indices(page), "read-only", "PTE R/W=0")


@accelerators
def test_pf_user_read_of_supervisor_page(accel: str) -> None:
    """Ring 3 reads a page whose PTE has U/S=0: #PF(0x5); the empty gate 14 then makes it #DF.

    The IDT read that finds gate 14 empty is an implicit supervisor access (SDM vol. 3A 4.6): it
    must not fault although the ABI maps the IDT supervisor-only and the CPU is at CPL3.
    """
    guest = GUESTS["broken_pf_user_super"]
    report = run_explained(guest, accel)
    if report is None:
        return
    page = guest.symbol("page_sup")
    expect_triple(report, accel, "#PF(0x5)", guest.symbol("bad_user_read"), "mov", ["#DF"])
    report.why_line(f"CR2={page:#x}", "user mode")
    report.why_line(*walk_indices(page), "user-mode access to a supervisor page", "PTE U/S=0")
    report.why_line("delivering #PF(0x5) failed", "IDT gate 0xe")


@accelerators
def test_pf_user_read_of_supervisor_page_then_faulting_handler(accel: str) -> None:
    """The #PF from ring 3 reaches its handler (stack from the TSS), which is a UD2 stub: the report is about
    that #UD, and still names the user/supervisor #PF that led there."""
    guest = GUESTS["broken_pf_user_super_handler"]
    report = run_explained(guest, accel)
    if report is None:
        return
    expect_triple(report, accel, "#UD", guest.symbol("pf_handler"), "ud2", ["#GP(0x32)", "#DF"])
    page = guest.symbol("page_sup")
    report.why_line(f"CR2={page:#x}")
    report.why_line("user-mode access to a supervisor page")


@accelerators
def test_pse_off_with_4mib_pdes(accel: str) -> None:
    """PDEs with PS=1 under CR4.PSE=0 point to 'page tables' of zeros: the fetch right after MOV CR3 faults."""
    guest = GUESTS["broken_pse_off"]
    report = run_explained(guest, accel)
    if report is None:
        return
    fetch = guest.symbol("bad_fetch")
    expect_triple(report, accel, "#PF(0x0)", fetch, None, ["#DF"])  # no instruction: it cannot be fetched
    report.why_line(f"CR2={fetch:#x}")
    report.why_line("PS=1", "CR4.PSE=0")


@accelerators
def test_stack_in_unmapped_page(accel: str) -> None:
    """ESP = 0x800000 (unmapped), then CALL: the push faults, #PF(0x2) just below ESP."""
    guest = GUESTS["broken_stack_unmapped"]
    report = run_explained(guest, accel)
    if report is None:
        return
    esp = guest.symbol("bad_esp")
    expect_triple(report, accel, "#PF(0x2)", guest.symbol("bad_call"), "call", ["#DF"])
    report.why_line(f"CR2={esp - 4:#x}", "write")
    report.why_line("stack pointer", f"{esp:#x}")


@accelerators
def test_stack_never_set_up(accel: str) -> None:
    """The --paging ABI enters with ESP = 0: the kernel's first CALL pushes at 0xfffffffc (ESP wrapped)."""
    guest = GUESTS["broken_stack_zero"]
    report = run_explained(guest, accel)
    if report is None:
        return
    pushed_at = (0 - 4) & 0xFFFFFFFF
    assert report.outcome.output == b"", report.show()
    expect_triple(report, accel, "#PF(0x2)", guest.symbol("bad_call"), "call", ["#DF"])
    report.why_line(f"CR2={pushed_at:#x}", "write")
    report.why_line("stack pointer")


@accelerators
def test_exception_frame_cannot_be_pushed(accel: str) -> None:
    """Every exception has a gate, but ESP is in an unmapped page: #UD's frame push faults, and so on."""
    guest = GUESTS["broken_stack_frame"]
    report = run_explained(guest, accel)
    if report is None:
        return
    expect_triple(report, accel, "#UD", guest.symbol("bad_ud2"), "ud2", ["#PF(0x2)", "#DF"])
    esp = guest.symbol("bad_esp")
    report.why_line("delivering #UD failed", "stack", f"{esp - 12:#x}")
    assert not any("IDT gate" in line for line in report.why), f"the IDT is fine here\n{report.show()}"


# --- 10-12. instructions that fault --------------------------------------------------------------------


@accelerators
def test_noncanonical_load(accel: str) -> None:
    """Long mode: MOV from 0x0000800000000000 → #GP(0) (not #PF)."""
    guest = GUESTS["broken_noncanonical"]
    report = run_explained(guest, accel)
    if report is None:
        return
    expect_triple(report, accel, "#GP(0x0)", guest.symbol("bad_load"), "mov", ["#DF"])
    report.why_line("non-canonical", f"{guest.symbol('bad_address'):#x}")


@accelerators
@pytest.mark.parametrize(("name", "label", "insn"), [
    pytest.param("broken_privileged", "bad_hlt", "hlt", id="hlt-32"),
    pytest.param("broken_privileged_64", "bad_cli", "cli", id="cli-64"),
])
def test_privileged_instruction_in_ring3(accel: str, name: str, label: str, insn: str) -> None:
    """HLT (32-bit) / CLI (64-bit, IOPL 0) at CPL3 → #GP(0). On hosts whose KVM emulates all CPL0 code
    the 32-bit guest's IRET into ring 3 cannot run there (probe), while 64-bit IRETQ can."""
    guest = GUESTS[name]
    report = run_explained(guest, accel)
    if report is None:
        return
    expect_triple(report, accel, "#GP(0x0)", guest.symbol(label), insn, ["#DF"])
    report.why_line(f"`{insn}`", "privileged", "CPL3")


@accelerators
def test_syscall_through_dpl0_gate(accel: str) -> None:
    """INT 0x80 from ring 3 through a DPL-0 gate: #GP(0x402), reported at the INT itself."""
    guest = GUESTS["broken_syscall_dpl"]
    report = run_explained(guest, accel)
    if report is None:
        return
    expect_triple(report, accel, "INT 0x80", guest.symbol("bad_int80"), "int 0x80", ["#GP(0x402)", "#DF"])
    report.why_line("DPL0", "CPL3")


@accelerators
def test_divide_by_zero(accel: str) -> None:
    """DIV ECX with ECX = 0: the explainer can see the divisor, so it says it is zero (and not 'or overflow')."""
    guest = GUESTS["broken_divide"]
    report = run_explained(guest, accel)
    if report is None:
        return
    expect_triple(report, accel, "#DE", guest.symbol("bad_div"), "div ecx", ["#DF"])
    line = report.why_line("div ecx", "zero")
    assert "too large" not in line, report.show()


@accelerators
def test_divide_overflow(accel: str) -> None:
    """DIV ECX with ECX = 10 but EDX left non-zero: the quotient does not fit; the divisor is not zero."""
    guest = GUESTS["broken_divide_overflow"]
    report = run_explained(guest, accel)
    if report is None:
        return
    expect_triple(report, accel, "#DE", guest.symbol("bad_div"), "div ecx", ["#DF"])
    line = report.why_line("div ecx", "quotient", "EDX")
    assert "by zero" not in line, report.show()


# --- 13. the unknown hypercall ------------------------------------------------------------------------------


@accelerators
def test_unknown_hypercall_names_number_and_out(accel: str) -> None:
    """hctest (bundled): hypercall 0x7f at its OUT, which the where listing names by symbol."""
    spec = bundled_spec("hctest")
    elf = guests_dir() / "hctest.elf"
    symbols = SymbolTable.from_elf(elf)
    [(outcome, lines)] = run_specs_inspected([spec], lambda m, r: explain(m, r, lambda: symbols), accel=accel,
                                             timeout=10)
    report = Report(outcome, lines)
    out = symbol_address(elf, "bad_hypercall")
    assert report.stop is StopKind.UNKNOWN_HYPERCALL, report.show()
    assert report.headline.startswith(f"unknown hypercall 0x7f at {out:#x} (out dx, al)"), report.show()
    assert "<bad_hypercall>" in report.cursor() and f"{out:#010x}" in report.cursor(), report.show()
    report.why_line("0x500")


# --- 14. what the host's KVM cannot execute ----------------------------------------------------------------


@accelerators
def test_kvm_cannot_emulate_protected_mode_iret(accel: str) -> None:
    """A CPL0 IRET: where minikvm's probe finds that this host's KVM cannot execute it, running on KVM ends in
    KVM_EXIT_INTERNAL_ERROR and the explainer names the IRET and points at the software CPU; elsewhere (and
    on the software CPU) the guest simply runs."""
    guest = GUESTS["broken_kvm_iret"]
    report = run_explained(guest, accel)
    if report is None:
        return
    if accel == "kvm" and kvm_cannot_run("protected-iret") is not None:
        assert report.outcome.output == b"kvm_iret: before\n", report.show()
        assert report.stop is StopKind.INTERNAL_ERROR, report.show()
        assert f"at {guest.symbol('bad_iret'):#x} (iretd)" in report.headline, report.show()
        report.why_line("`iretd`")
        report.why_line("--accel emu")
        return
    assert report.outcome.output == b"kvm_iret: before\nkvm_iret: after\n", report.show()
    assert report.stop is StopKind.EXIT_HYPERCALL, report.show()


@accelerators
def test_kvm_cannot_emulate_sse_at_cpl0(accel: str) -> None:
    """PXOR at CPL0 with SSE enabled. minikvm has no probe for SSE at CPL0 (kvm-pvm's emulator lacks it;
    VMX/SVM run it natively), so on KVM both ends are accepted, each only with its full, right report."""
    guest = GUESTS["broken_kvm_sse"]
    report = run_explained(guest, accel)
    if report is None:
        return
    if accel == "kvm" and report.stop is StopKind.INTERNAL_ERROR:
        assert report.outcome.output == b"kvm_sse: before\n", report.show()
        assert f"at {guest.symbol('bad_pxor'):#x} (pxor xmm0, xmm0)" in report.headline, report.show()
        report.why_line("`pxor xmm0, xmm0`")
        report.why_line("-mgeneral-regs-only", "--accel emu")
        return
    assert report.outcome.output == b"kvm_sse: before\nkvm_sse: after\n", report.show()
    assert report.stop is StopKind.EXIT_HYPERCALL, report.show()


# --- properties of every report ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", TRIPLE_FAULTING)
def test_kvm_and_software_cpu_explain_alike(name: str, kvm_required: None) -> None:
    """Where KVM runs the guest, its (replayed) explanation has the software CPU's headline and causes."""
    guest = GUESTS[name]
    kvm = run_explained(guest, "kvm", cr4=0 if name == "broken_sse_trap" else None)
    if kvm is None:
        return
    emu = run_explained(guest, "emu", cr4=0 if name == "broken_sse_trap" else None)
    assert emu is not None
    assert (kvm.headline, kvm.why) == (emu.headline, emu.why), f"{kvm.show()}\n---\n{emu.show()}"


@pytest.mark.parametrize("name", TRIPLE_FAULTING)
def test_report_is_well_formed(name: str) -> None:
    """Every line is the headline, a section title, an indented item of it, or a note: a multi-line cause
    must not leave an unindented line in the middle of 'why'."""
    report = run_explained(GUESTS[name], "emu", cr4=0 if name == "broken_sse_trap" else None)
    assert report is not None
    assert report.why and report.where and report.sections.get("state"), report.show()
    assert not report.stray, f"lines outside the report's structure: {report.stray}\n{report.show()}"


@pytest.mark.parametrize("name", TRIPLE_FAULTING)
def test_where_listing_matches_the_elf(name: str) -> None:
    """The instructions listed up to the faulting one are the ELF's own (objdump): same addresses, same bytes,
    so decoding backwards from RIP started on a real instruction boundary."""
    guest = GUESTS[name]
    report = run_explained(guest, "emu", cr4=0 if name == "broken_sse_trap" else None)
    assert report is not None
    code = objdump(guest.elf)
    first = min(code)
    problems = []
    for line in report.where:
        match = re.match(r"^(=>|  ) (0x[0-9a-f]+)(?: <[^>]*>)?: ((?:[0-9a-f]{2} ?)+)", line)
        if match is None:
            continue  # "(memory not readable)"
        address, raw = int(match[2], 16), bytes.fromhex(match[3])
        if address >= first and (address not in code or code[address][0] != raw):
            shown = code[address][0].hex(" ") if address in code else "no instruction starts there"
            problems.append(f"{address:#x}: listed {raw.hex(' ')}, objdump: {shown}")
        if match[1] == "=>":
            break
    assert not problems, "\n".join([*problems, report.show()])


def test_every_broken_guest_is_tested() -> None:
    sources = sorted(p.stem for p in (Path(__file__).parents[2] / "guests" / "broken").glob("broken_*.S"))
    assert sources == sorted(GUESTS)


def test_paging_turned_on_by_the_guest_where_this_kvm_cannot_run_it(kvm_required: None, tmp_path: Path) -> None:
    """The original Mini-KVM's mystery: its OS turned on paging and got a bare KVM_EXIT_SHUTDOWN. A host
    whose KVM runs 32-bit paging runs this guest to its EXIT; one that cannot (kvm-pvm, by minikvm's own
    probe) shuts it down, and the report must say that the host, not the guest, is the cause."""
    from .harness import assemble

    guest = assemble(tmp_path, """
        .code32
        movl $0x83, 0x10000             # PDE 0: a 4 MiB page at 0 (present, writable, PS)
        mov %cr4, %eax
        or $0x10, %eax                  # CR4.PSE
        mov %eax, %cr4
        mov $0x10000, %eax
        mov %eax, %cr3
        mov %cr0, %eax
        or $0x80000000, %eax
    paging_on:
        mov %eax, %cr0                  # CR0.PG
        mov $0x500, %dx
        xor %al, %al
        out %al, %dx                    # EXIT
    """, 32, load=0x1000)
    symbols = SymbolTable.from_elf(tmp_path / "guest.elf")
    [(outcome, lines)] = run_specs_inspected([spec_for("pg", guest, Mode.PROTECTED)],
                                             lambda m, r: explain(m, r, lambda: symbols), accel="kvm", timeout=10)
    report = Report(outcome, lines)
    limitation = kvm_cannot_run("paging-4m")
    if limitation is None:
        assert report.stop is StopKind.EXIT_HYPERCALL, report.show()
        return
    at = symbol_address(tmp_path / "guest.elf", "paging_on")
    assert report.stop is StopKind.TRIPLE_FAULT, report.show()
    assert report.headline == (f"triple fault at {at:#x} (mov cr0, eax): this host's KVM cannot run 32-bit paging, "
                               "4 MiB pages (PSE)"), report.show()
    assert any(limitation in line for line in report.why), report.show()
    assert "the same run on minikvm's software CPU did not fault: it ended with 'exit hypercall'" in report.why, \
        report.show()
    assert any("--accel emu" in line for line in report.why), report.show()
