"""Exception and interrupt delivery, checked against the SDM with the guests in guests/exceptions/.

Each guest prints the frame its handler saw as lines of `tag key=hex ...`
(see the guest's header comment); every value is compared with the one the
Intel SDM vol. 3A ch. 6 prescribes, addresses taken from the guest's ELF
symbols. Each guest runs on every accelerator that can run it on this host,
as minikvm's own probe measures it: the software CPU always, KVM where the
probe says it can. Where it cannot, the KVM case asserts that asking for KVM
is refused with the host's limitation named (it never passes silently).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from minikvm.accel import INTERRUPT_PROBE, MODE_PROBE, AcceleratorError, choose, kvm_cannot_run
from minikvm.arch.x86.state import Mode
from minikvm.boot.bundled import guests_dir
from minikvm.stop import StopKind

from .harness import ACCELERATORS, Outcome, run_one, spec_for, symbol_address

RF = 0x10000  # EFLAGS.RF: pushed as 1 by every fault-class exception (SDM vol. 3B 17.3.1.1)
IF = 0x200
FIXED = 0x2  # EFLAGS bit 1, always set

SEL_KCODE, SEL_KDATA, SEL_UCODE, SEL_UDATA = 0x08, 0x10, 0x1B, 0x23


@pytest.fixture(autouse=True)
def _needs_kvm(request: pytest.FixtureRequest) -> None:
    """Only the KVM cases need /dev/kvm (skip, or fail under MINIKVM_REQUIRE_KVM); the software CPU runs anywhere."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("accel") == "kvm":
        request.getfixturevalue("kvm_required")


@dataclass(frozen=True)
class ExcGuest:
    name: str
    mode: Mode  # the mode it is loaded and entered in
    runs_in: Mode  # the mode it needs the CPU to run (exc_pf turns 32-bit paging on itself)
    handlers_return: bool  # its handlers IRET at CPL0 (accel.choose's `interrupts`)
    interrupts: bool = False  # it needs the PIC and PIT (--interrupts)

    @property
    def path(self) -> Path:
        return guests_dir() / f"{self.name}.bin"

    def symbol(self, name: str) -> int:
        return symbol_address(self.path.with_suffix(".elf"), name)


GUESTS = {g.name: g for g in [
    ExcGuest("exc_de", Mode.PROTECTED, Mode.PROTECTED, handlers_return=True),
    ExcGuest("exc_ud", Mode.PROTECTED, Mode.PROTECTED, handlers_return=True),
    ExcGuest("exc_gp", Mode.PROTECTED, Mode.PROTECTED, handlers_return=True),  # IRET to ring 3 first
    ExcGuest("exc_int80", Mode.PROTECTED, Mode.PROTECTED, handlers_return=True),
    ExcGuest("exc_pf", Mode.PROTECTED, Mode.PAGING, handlers_return=True),
    ExcGuest("exc_df", Mode.PROTECTED, Mode.PROTECTED, handlers_return=False),
    ExcGuest("exc_triple", Mode.PROTECTED, Mode.PROTECTED, handlers_return=False),
    ExcGuest("exc_irq0", Mode.PROTECTED, Mode.PROTECTED, handlers_return=True, interrupts=True),
    ExcGuest("exc_real_int", Mode.REAL, Mode.REAL, handlers_return=True),
    ExcGuest("exc_long_pf", Mode.LONG, Mode.LONG, handlers_return=False),
]}


def host_limitation(guest: ExcGuest) -> str | None:
    """What this host's KVM lacks for `guest`, from minikvm's probes; None when KVM can run it."""
    reason = kvm_cannot_run(MODE_PROBE[guest.runs_in])
    if reason is None and guest.handlers_return and guest.runs_in in INTERRUPT_PROBE:
        reason = kvm_cannot_run(INTERRUPT_PROBE[guest.runs_in])
    return reason


def run_guest(name: str, accel: str, timeout: float = 10) -> Outcome | None:
    """Run a guest on `accel`; None when KVM cannot run it here (after checking that KVM is refused, and why)."""
    guest = GUESTS[name]
    if not guest.path.exists():
        pytest.fail(f"{guest.path} is not built: run 'make -C guests/exceptions'")
    if accel == "kvm":
        limitation = host_limitation(guest)
        if limitation is not None:
            with pytest.raises(AcceleratorError) as refused:
                choose("kvm", guest.runs_in, guest.handlers_return)
            message = str(refused.value)
            assert "cannot run" in message and limitation in message, message
            return None
        assert choose("kvm", guest.runs_in, guest.handlers_return).name == "kvm"
    spec = dataclasses.replace(spec_for(name, guest.path.read_bytes(), guest.mode), interrupts=guest.interrupts)
    return run_one(spec, accel=accel, timeout=timeout)


Frame = tuple[str, dict[str, int]]


def parse(output: bytes) -> list[Frame]:
    """`tag key=hex key=hex` lines into (tag, {key: value})."""
    frames = []
    for line in output.decode(errors="replace").splitlines():
        tag, *fields = line.split()
        values = {}
        for field in fields:
            key, _, value = field.partition("=")
            try:
                values[key] = int(value, 16)
            except ValueError:
                values[key] = -1  # not hex: shows up as a mismatch
        frames.append((tag, values))
    return frames


def check_frames(outcome: Outcome, expected: list[Frame], kind: StopKind = StopKind.EXIT_HYPERCALL) -> None:
    """Every printed value against the expected one; all differences in one message."""
    actual = parse(outcome.output)
    problems = []
    for index in range(max(len(actual), len(expected))):
        got = actual[index] if index < len(actual) else None
        want = expected[index] if index < len(expected) else None
        if got is None or want is None or got[0] != want[0]:
            problems.append(f"line {index + 1}: printed {str(got)[:200]}, expected {want}")
            continue
        for key, value in want[1].items():
            if got[1].get(key) != value:
                shown = "missing" if key not in got[1] else f"{got[1][key]:#x}"
                problems.append(f"line {index + 1} ({want[0]}): {key} is {shown}, expected {value:#x}")
    assert not problems, "\n".join([*problems, outcome.explain()[:4000]])
    assert outcome.result.stop.kind is kind, outcome.explain()


accelerators = pytest.mark.parametrize("accel", ACCELERATORS)


@accelerators
@pytest.mark.parametrize(("name", "vector", "insn", "resume", "eax"), [
    pytest.param("exc_de", 0, "de_insn", "de_resume", 1234, id="exc_de"),
    pytest.param("exc_ud", 6, "ud_insn", "ud_resume", 0xBEEF, id="exc_ud"),
])
def test_fault_without_error_code_same_privilege(accel: str, name: str, vector: int, insn: str, resume: str,
                                                 eax: int) -> None:
    """#DE / #UD at CPL0: EIP of the faulting instruction, no error code, RF=1 pushed, IF=1 kept in the frame."""
    outcome = run_guest(name, accel)
    if outcome is None:
        return
    guest = GUESTS[name]
    assert guest.symbol(resume) > guest.symbol(insn)
    # A real CPU's PUSHF never stores RF. Unicorn 2.1.4's PUSHF copies it, and RF is still set right
    # after the handler's IRET (measured; minikvm clears it at the next slice boundary), so on the
    # software CPU the resumed code sees RF: a known deviation of the engine, stated here.
    resumed_flags = FIXED | IF | (RF if accel == "emu" else 0)
    check_frames(outcome, [
        (name.removeprefix("exc_"), {"vec": vector, "eip": guest.symbol(insn), "cs": SEL_KCODE,
                                     "eflags": FIXED | IF | RF, "frame": 12, "hflags": FIXED}),
        ("resumed", {"eflags": resumed_flags, "eax": eax}),
    ])


@accelerators
def test_gp_error_code_from_int_through_dpl0_gate_from_ring3(accel: str) -> None:
    """INT 0x41 at CPL3 through a DPL-0 gate: #GP(0x41*8+2) on the INT, with a stack switch to SS0:ESP0."""
    outcome = run_guest("exc_gp", accel)
    if outcome is None:
        return
    guest = GUESTS["exc_gp"]
    check_frames(outcome, [
        ("gp", {"vec": 13, "err": 0x41 * 8 + 2, "eip": guest.symbol("gp_int"), "cs": SEL_UCODE,
                "eflags": FIXED | IF | RF, "esp": guest.symbol("ustack_top"), "ss": SEL_UDATA,
                "kesp": guest.symbol("kstack_top") - 6 * 4, "hflags": FIXED}),
    ])


@accelerators
def test_int80_from_ring3_and_iret_back(accel: str) -> None:
    """INT 0x80 through a DPL-3 trap gate: next EIP, user SS:ESP, handler at TSS.ESP0-20, IF kept; IRET to ring 3."""
    outcome = run_guest("exc_int80", accel)
    if outcome is None:
        return
    guest = GUESTS["exc_int80"]
    common = {"cs": SEL_UCODE, "eflags": FIXED | IF, "esp": guest.symbol("ustack_top"), "ss": SEL_UDATA,
              "kesp": guest.symbol("kstack_top") - 5 * 4, "hflags": FIXED | IF}
    check_frames(outcome, [
        ("int80", {"eax": 1, "eip": guest.symbol("int80_after1"), **common, "ebx": 0}),
        ("int80", {"eax": 0, "eip": guest.symbol("int80_after2"), **common, "ebx": SEL_UCODE}),
    ])


@accelerators
def test_three_page_faults_with_error_codes(accel: str) -> None:
    """Not present (0x0), write to read-only with CR0.WP (0x3), user read of a supervisor page (0x5); each retried."""
    outcome = run_guest("exc_pf", accel)
    if outcome is None:
        return
    guest = GUESTS["exc_pf"]
    kernel = {"cs": SEL_KCODE, "eflags": FIXED | RF}
    check_frames(outcome, [
        ("pf", {"n": 1, "cr2": guest.symbol("page_np"), "err": 0x0, "eip": guest.symbol("pf_read"), **kernel}),
        ("read", {"val": 0xA0A0A0A0}),
        ("pf", {"n": 2, "cr2": guest.symbol("page_ro"), "err": 0x3, "eip": guest.symbol("pf_write"), **kernel}),
        ("write", {"val": 0xB1B1B1B1}),
        ("pf", {"n": 3, "cr2": guest.symbol("page_sup"), "err": 0x5, "eip": guest.symbol("pf_user"),
                "cs": SEL_UCODE, "eflags": FIXED | IF | RF, "esp": guest.symbol("ustack_top"), "ss": SEL_UDATA}),
        ("user", {"val": 0xC0C0C0C0}),
    ])


@accelerators
def test_gp_through_absent_gate_becomes_double_fault(accel: str) -> None:
    """#GP, then #NP reading its not-present gate: two contributory faults make #DF(0) (SDM Table 6-5)."""
    outcome = run_guest("exc_df", accel)
    if outcome is None:
        return
    check_frames(outcome, [("df", {"vec": 8, "err": 0, "frame": 16})])


@accelerators
def test_ud2_without_idt_triple_faults(accel: str) -> None:
    """#UD with an IDT of limit 0: #GP, #DF, then shutdown; the software CPU keeps the chain."""
    outcome = run_guest("exc_triple", accel)
    if outcome is None:
        return
    result = outcome.result
    assert outcome.output == b"triple: ud2 with an empty IDT\n", outcome.explain()
    assert result.stop.kind is StopKind.TRIPLE_FAULT and result.stop.status == 1, outcome.explain()
    if not (result.snapshot is not None and result.snapshot.reset_state):  # AMD SVM: registers are the reset state
        assert result.stop.rip == GUESTS["exc_triple"].symbol("triple_ud2"), outcome.explain()
    if accel == "emu":
        vectors = [link.event.vector for link in outcome.chain]
        assert vectors[:3] == [6, 13, 8] and set(vectors[3:]) <= {8}, outcome.chain
        assert outcome.chain[1].event.error_code == 6 * 8 + 2, outcome.chain  # IDT bit: vector 6 beyond the limit
        assert "triple fault" in outcome.chain[-1].outcome, outcome.chain


@accelerators
def test_irq0_from_the_pit_50_ticks_at_100hz(accel: str) -> None:
    """PIC remapped to 0x20, PIT mode 2 at 100 Hz: 50 ticks, the first one woke the HLT with IF=1 saved."""
    outcome = run_guest("exc_irq0", accel)
    if outcome is None:
        return
    check_frames(outcome, [
        ("irq0", {"ticks": 50, "eip": GUESTS["exc_irq0"].symbol("irq0_after_hlt"), "cs": SEL_KCODE,
                  "eflags": FIXED | IF, "hflags": FIXED}),
    ])
    # 50 periods of 10 ms: a correctness bound on the timer's rate, not a benchmark.
    assert 0.2 < outcome.result.wall_seconds < 5, outcome.result.wall_seconds


@accelerators
def test_real_mode_int_and_divide_error_through_the_ivt(accel: str) -> None:
    """INT 0x21 and #DE in real mode: IP/CS/FLAGS pushed, CS:IP from the IVT, IF/TF cleared, IRET back."""
    outcome = run_guest("exc_real_int", accel)
    if outcome is None:
        return
    guest = GUESTS["exc_real_int"]
    handler_cs = 0x0100
    check_frames(outcome, [
        ("int21", {"ip": guest.symbol("rint_after"), "cs": 0, "flags": 0x0203, "hcs": handler_cs, "frame": 6,
                   "hflags": 0x0003}),
        ("back", {"flags": 0x0203}),
        ("de", {"ip": guest.symbol("rdiv_insn"), "cs": 0, "flags": FIXED, "hcs": handler_cs, "frame": 6,
                "hflags": FIXED}),
        ("resumed", {"flags": FIXED, "ax": 100}),
    ])


@accelerators
def test_long_mode_page_fault_frame(accel: str) -> None:
    """#PF in 64-bit mode: CR2, error code 0, and the 64-bit frame RIP, CS, RFLAGS, RSP, SS (6 * 8 bytes)."""
    outcome = run_guest("exc_long_pf", accel)
    if outcome is None:
        return
    guest = GUESTS["exc_long_pf"]
    check_frames(outcome, [
        ("lpf", {"cr2": guest.symbol("lpf_addr"), "err": 0, "rip": guest.symbol("lpf_insn"), "cs": SEL_KCODE,
                 "rflags": FIXED | RF, "rsp": guest.symbol("stack_top"), "ss": SEL_KDATA, "frame": 48,
                 "hflags": FIXED}),
    ])


def test_every_exception_guest_is_tested() -> None:
    sources = sorted(p.stem for p in (Path(__file__).parents[2] / "guests" / "exceptions").glob("exc_*.S"))
    assert sources == sorted(GUESTS)
