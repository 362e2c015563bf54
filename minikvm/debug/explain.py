"""The fault explainer: why a guest died, in words a student can act on.

A report has four parts: what happened (one sentence with the exception
chain), why (causes from a catalogue, each with the state that proves it),
where (the faulting instruction with its neighbours and symbols), and the
CPU state. The exception chain comes from the software CPU, which delivers
every exception itself; on KVM, where a triple fault is a bare SHUTDOWN,
the run is replayed on the software CPU from the same image and input.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..arch.x86.decoder import engine
from ..arch.x86.exceptions import VECTORS
from ..arch.x86.registers import CR0_EM, CR0_PG, CR0_TS, CR4_OSFXSR, CR4_PAE, CR4_PSE, EFER_LMA, EFER_LME
from ..arch.x86.walk import EXECUTE, Access, Op, PagingMode, describe_error_code, paging_mode, read_linear, translate
from ..kvm.exits import InternalErrorExit
from ..machine import CpuSnapshot, Machine, RunResult
from ..stop import StopKind
from .disasm import bits_for
from .dump import register_dump
from .report import EXPLAINED, RESET_STATE
from .symbols import SymbolTable

if TYPE_CHECKING:  # the software CPU's module pulls in Unicorn: not needed to import this one
    from ..emu.delivery import ChainLink

PRIVILEGED = {"hlt", "cli", "sti", "lgdt", "lidt", "lldt", "ltr", "lmsw", "clts", "invd", "wbinvd", "invlpg",
              "rdmsr", "wrmsr", "in", "out", "insb", "insw", "insd", "outsb", "outsw", "outsd", "iretd"}
X87_PREFIXES = ("f",)  # fld, fstp, fninit, … (capstone names every x87 instruction with a leading f)


@dataclass
class Explanation:
    headline: str
    causes: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    state: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [self.headline]
        for title, body in (("why", self.causes), ("where", self.where), ("state", self.state)):
            if body:
                out.append(f"{title}:")
                out.extend(f"  {line}" for line in body)
        out.extend(f"note: {note}" for note in self.notes)
        return out


@dataclass
class Instruction:
    address: int
    raw: bytes
    text: str
    mnemonic: str
    groups: tuple[str, ...]
    operands: list  # capstone operands, for effective addresses
    reg_name: Callable[[int], str]  # capstone's register id → name


def decode(code: bytes, address: int, bits: int) -> Instruction | None:
    for insn in engine(bits, detail=True).disasm(code, address, 1):
        groups = tuple(insn.group_name(g) or "" for g in insn.groups)
        return Instruction(insn.address, bytes(insn.bytes), f"{insn.mnemonic} {insn.op_str}".strip(),
                           insn.mnemonic, groups, list(insn.operands), insn.reg_name)
    return None


def context_listing(read: Callable[[int, int], bytes], rip: int, bits: int, symbols: SymbolTable | None,
                    before: int = 3, after: int = 3) -> list[str]:
    """The faulting instruction with a few before and after.

    x86 cannot be decoded backwards. Decoding starts at the nearest symbol when there is one close
    by (code starts there); otherwise at the furthest earlier offset from which decoding lands
    exactly on RIP, since a longer run of decoding falls into step with the real instructions."""
    from .disasm import disassemble

    starts = list(range(15 * before, -1, -1))
    symbol = symbols.start_of(rip) if symbols is not None else None
    if symbol is not None and 0 <= rip - symbol <= 512:
        starts = [rip - symbol, *starts]
    best: list[tuple[int, bytes, str]] = []
    index = -1
    for back in starts:
        try:
            code = read(rip - back, back + 15 * (after + 1))
        except Exception:  # memory before RIP may be unreadable: try the next start
            continue
        decoded = disassemble(code, rip - back, bits, count=back + after + 1)
        addresses = [address for address, _, _ in decoded]
        if rip in addresses:
            best, index = decoded, addresses.index(rip)
            break
    if not best:
        return [f"{rip:#x}: (memory not readable)"]
    lines = []
    for address, raw, text in best[max(0, index - before):index + after + 1]:
        marker = "=>" if address == rip else "  "
        name = symbols.describe(address) if symbols is not None else None
        where = f" <{name}>" if name else ""
        lines.append(f"{marker} {address:#010x}{where}: {raw.hex(' '):<24} {text}")
    return lines


_MOV_TO_CR = re.compile(r"^mov cr([04]), (\w+)$")  # the writes that can turn paging on
_FULL_REGISTER = {f"e{r}": f"r{r}" for r in ("ax", "bx", "cx", "dx", "si", "di", "sp", "bp")}


class Explainer:
    """Builds an Explanation for one stopped machine (still open: memory and tables are read)."""

    def __init__(self, machine: Machine, result: RunResult, symbols: SymbolTable | None) -> None:
        self.machine = machine
        self.result = result
        self.symbols = symbols

    def explain(self) -> Explanation | None:
        result = self.result
        if result.stop.kind not in EXPLAINED or result.snapshot is None:
            return None
        snap = result.snapshot
        notes: list[str] = []
        explanation = None
        if result.stop.kind is StopKind.TRIPLE_FAULT and not snap.chain:
            replayed = replay_on_software_cpu(self.machine, result)
            explanation = self._paging_this_kvm_cannot_run(snap, replayed)
            same_end = replayed is not None and replayed.stop.kind is StopKind.TRIPLE_FAULT
            if explanation is None and same_end and replayed.snapshot is not None and replayed.snapshot.chain:
                notes.append("KVM reports a triple fault without the exceptions that led to it; minikvm replayed "
                             "the run on its software CPU (same image, same input) to the same end and took the "
                             "chain from there")
                if snap.reset_state:
                    notes.append(RESET_STATE)
                snap = replayed.snapshot
            elif explanation is None and snap.reset_state:
                return Explanation(f"triple fault: {RESET_STATE}", notes=["the replay on the software CPU did not "
                                                                           "reach a triple fault either"])
        elif snap.reset_state:
            return Explanation(f"triple fault: {RESET_STATE}")
        bits = bits_for(snap.mode, bool(snap.sregs.cs.db), bool(snap.sregs.cs.l))
        if explanation is None:
            explanation = self._by_kind(snap, bits)
            explanation.notes = notes + explanation.notes
        rip = snap.regs.rip if snap.sregs.cs.l else (snap.regs.rip + snap.sregs.cs.base) & 0xFFFFFFFF
        explanation.where = context_listing(self._read_linear(snap), rip, bits, self.symbols)
        explanation.state = register_dump(snap.regs, snap.sregs)
        return explanation

    def _paging_this_kvm_cannot_run(self, snap: CpuSnapshot, replayed: RunResult | None) -> Explanation | None:
        """The shutdown is the host's: the guest turned on a paging mode that this host's KVM cannot run
        (kvm-pvm shuts down at 32-bit and PAE paging; the probe measures it), and the software CPU ran on.

        This is the original Mini-KVM's mystery: its OS enabled paging, and KVM_EXIT_SHUTDOWN was all it got."""
        from ..accel import PROBES, kvm_cannot_run

        if self.machine.accel.name != "kvm" or (replayed is not None and replayed.stop.kind is StopKind.TRIPLE_FAULT):
            return None
        regs, sregs = snap.regs, snap.sregs
        cr0, cr4 = sregs.cr0, sregs.cr4
        bits = bits_for(snap.mode, bool(sregs.cs.db), bool(sregs.cs.l))
        insn = decode(snap.code, regs.rip, bits)
        written = _MOV_TO_CR.match(insn.text) if insn is not None else None
        if written is not None:  # the instruction that shut it down is the write that turns paging on
            value = getattr(regs, _FULL_REGISTER.get(written[2], written[2]), None)
            if value is not None:
                cr0, cr4 = (value, cr4) if written[1] == "0" else (cr0, value)
        if not cr0 & CR0_PG or sregs.efer & EFER_LME:
            return None  # no paging, or long mode: not what this explanation is about
        probe = "pae" if cr4 & CR4_PAE else "paging-4m" if cr4 & CR4_PSE else "paging-4k"
        why = kvm_cannot_run(probe)
        if why is None:
            return None
        label = PROBES[probe].label
        at = f"{regs.rip:#x}" + (f" ({insn.text})" if insn else "")
        causes = [f"the guest turns on {label} here, and this host's KVM cannot run it: {why} "
                  "(minikvm's probe measured it; 'minikvm host' shows every mode)",
                  "the shutdown is the host's, not the guest's fault"]
        if replayed is not None:
            causes.append(f"the same run on minikvm's software CPU did not fault: it ended with "
                          f"'{replayed.stop.message}'")
        causes.append("run it with --accel emu: --accel auto picks the software CPU for guests that start in "
                      "a mode this host's KVM cannot run, but cannot know that a guest turns paging on itself")
        return Explanation(f"triple fault at {at}: this host's KVM cannot run {label}", causes)

    # --- per stop kind ----------------------------------------------------------------

    def _by_kind(self, snap: CpuSnapshot, bits: int) -> Explanation:
        kind = self.result.stop.kind
        insn = decode(snap.code, snap.regs.rip, bits)
        at = f"{snap.regs.rip:#x}" + (f" ({insn.text})" if insn else "")
        if kind is StopKind.TRIPLE_FAULT:
            return self._triple_fault(snap, insn, bits)
        if kind is StopKind.UNKNOWN_HYPERCALL:
            return Explanation(f"{self.result.stop.message} at {at}", [
                "the guest's OUT to port 0x500 carried a hypercall number minikvm does not know; the ABI has "
                "0 EXIT, 1 PUTCHAR (BL = byte), 2 GETCHAR (IN AL, 0x500 reads it back)"])
        if kind is StopKind.INTERNAL_ERROR:
            return self._internal_error(snap, insn, at)
        return Explanation(f"{self.result.stop.message} at {at}")

    def _internal_error(self, snap: CpuSnapshot, insn: Instruction | None, at: str) -> Explanation:
        exit = self.machine.loop.last_exit
        causes = []
        if isinstance(exit, InternalErrorExit) and exit.suberror == 1 and insn is not None:
            causes.append(f"KVM's instruction emulator cannot execute `{insn.text}`. Some hosts (kvm-pvm) run all "
                          "CPL0 code through that emulator, which lacks many instructions")
            if _is_simd(insn):
                causes.append("it is an SSE/x87 instruction: compile CPL0 C code with -mgeneral-regs-only, or run "
                              "the guest on the software CPU (--accel emu)")
            elif insn.mnemonic.startswith("iret"):
                causes.append("a protected-mode IRET (returning from an interrupt handler) is one of them: run the "
                              "guest on the software CPU (--accel emu; with --interrupts, --accel auto does that "
                              "by itself)")
            else:
                causes.append("run the guest on the software CPU (--accel emu) to get past it")
        return Explanation(f"{self.result.stop.message} at {at}", causes)

    def _triple_fault(self, snap: CpuSnapshot, insn: Instruction | None, bits: int) -> Explanation:
        chain = snap.chain
        if not chain:
            return Explanation(f"triple fault at {snap.regs.rip:#x}" + (f" ({insn.text})" if insn else ""),
                               ["the accelerator did not report the exceptions that led to it"])
        # The chain keeps recent deliveries too: the fatal part starts after the last one that worked.
        start = max((i + 1 for i, link in enumerate(chain) if link.delivered), default=0)
        fatal = [link for link in chain[start:] if "triple fault" not in link.outcome] or chain[-1:]
        first = fatal[0]
        code = self._read_linear(snap)
        try:
            first_insn = decode(code(first.rip, 16), first.rip, bits)
        except Exception:  # the faulting address may not be readable
            first_insn = None
        where = f"{first.rip:#x}" + (f" ({first_insn.text})" if first_insn else "")
        failed = "could not be delivered: "
        later = " → ".join(_short(link.event) for link in fatal[1:])
        headline = (f"triple fault: {_short(first.event)} at {where} {failed}{first.outcome.removeprefix(failed)}"
                    f"{' → ' + later if later else ''} → shutdown")
        causes = self._first_event_causes(snap, first, first_insn)
        for link in fatal:
            if link.outcome.startswith(failed):
                causes.append(f"delivering {_short(link.event)} failed: {link.outcome.removeprefix(failed)}")
        idt = snap.sregs.idt
        if any("IDT" in link.outcome for link in fatal):
            causes.append(f"the IDT is at {idt.base:#x} with limit {idt.limit:#x}: it needs a present interrupt or "
                          "trap gate for every vector that can occur (at least #GP 13, #PF 14 and #DF 8)")
        if start and chain[start - 1].event.vector < 32 and not chain[start - 1].event.external:
            # The fatal fault happened in a handler: what that handler was called for is part of the story.
            handled = chain[start - 1]
            try:
                handled_insn = decode(code(handled.rip, 16), handled.rip, bits)
            except Exception:  # the earlier instruction may no longer be readable
                handled_insn = None
            causes.append(f"it happened in the handler of an earlier {_short(handled.event)} at {handled.rip:#x}, "
                          f"{handled.outcome}:")
            causes.extend(f"  {line}" for line in self._first_event_causes(snap, handled, handled_insn))
        earlier = chain[:start][-3:]
        notes = [f"before that: {_short(link.event)} at {link.rip:#x} was {link.outcome}" for link in earlier]
        return Explanation(headline, causes, notes=notes)

    # --- the cause catalogue ------------------------------------------------------------

    def _first_event_causes(self, snap: CpuSnapshot, link: ChainLink, insn: Instruction | None) -> list[str]:
        sregs, regs = snap.sregs, snap.regs
        vector, error_code = link.event.vector, link.event.error_code
        cpl = sregs.cs.selector & 3 if sregs.cr0 & 1 else 0
        if link.event.software:
            return [f"`{insn.text if insn else 'INT'}` at CPL{cpl}: " + link.outcome.removeprefix(
                "could not be delivered: ") + (" — a gate meant for INT from user mode needs DPL 3"
                                                if "DPL" in link.outcome else "")]
        if vector == 6 and insn is not None and _is_simd(insn):
            if not sregs.cr4 & CR4_OSFXSR:
                return [f"`{insn.text}` is an SSE instruction and CR4.OSFXSR=0 (CR4={sregs.cr4:#x}): the CPU "
                        "refuses SSE until the OS enables it, so it raises #UD. Set CR4.OSFXSR|OSXMMEXCPT (and "
                        "clear CR0.EM) before running compiled code, or compile with -mgeneral-regs-only. This is "
                        "the original Mini-KVM \"SHUTDOWN\": GCC auto-vectorised memset"]
            if sregs.cr0 & CR0_EM:
                return [f"`{insn.text}` is an SSE/x87 instruction and CR0.EM=1 (CR0={sregs.cr0:#x}): #UD"]
        if vector == 6 and insn is not None:
            if insn.mnemonic == "ud2":
                return [f"`ud2` at {insn.address:#x} is the guest's own deliberate invalid instruction"]
            return [f"`{insn.text}` is not a valid instruction here (wrong mode, or not code)"]
        if vector == 6:
            return ["the bytes at RIP are not a valid instruction"]
        if vector == 7:
            why = "CR0.TS=1 (a task switch marked the FPU state stale)" if sregs.cr0 & CR0_TS else "CR0.EM=1"
            return [f"x87/SSE instruction with {why}: #NM (device not available)"]
        if vector == 0:
            return self._divide(insn, regs)
        if vector == 13:
            return self._general_protection(snap, insn, cpl, error_code)
        if vector == 14:
            return self._page_fault(snap, link.cr2 if link.cr2 is not None else sregs.cr2, error_code)
        name = VECTORS.get(vector)
        return [f"the first exception was {name.mnemonic + ' (' + name.name + ')' if name else f'vector {vector}'}"]

    def _divide(self, insn: Instruction | None, regs: object) -> list[str]:
        if insn is None or not insn.operands:
            return ["divide error (#DE): division by zero, or a quotient too large for the destination"]
        import capstone

        operand = insn.operands[0]
        size = operand.size
        names = {1: ("al", "ah", "ax"), 2: ("ax", "dx", "dx:ax"), 4: ("eax", "edx", "edx:eax"),
                 8: ("rax", "rdx", "rdx:rax")}.get(size)
        if names is None:  # not a plain register or memory divisor capstone sized for us
            return [f"`{insn.text}`: division by zero, or a quotient too large for the destination (#DE)"]
        mask = (1 << (8 * size)) - 1
        if operand.type == capstone.CS_OP_REG:
            name = insn.reg_name(operand.reg)
            divisor = _register(regs, name) & mask
            what = name.upper()
        else:
            return [f"`{insn.text}`: division by zero, or a quotient too large for {names[0].upper()} (#DE)"]
        if divisor == 0:
            return [f"`{insn.text}`: {what}=0, a division by zero (#DE)"]
        # The dividend is twice the divisor's width: AH:AL, DX:AX, EDX:EAX or RDX:RAX.
        low, high = (("al", "ah") if size == 1 else (names[0], names[1]))
        low, high = _register(regs, low), _register(regs, high)
        dividend_name = "AX" if size == 1 else names[2].upper()
        return [f"`{insn.text}`: {dividend_name} = {high:#x}:{low:#x} divided by {what}={divisor:#x} gives a "
                f"quotient too large for {names[0].upper()} (#DE): clear {names[1].upper()} before an unsigned "
                "DIV, or sign-extend (CDQ/CQO) before IDIV"]

    def _general_protection(self, snap: CpuSnapshot, insn: Instruction | None, cpl: int,
                            error_code: int | None) -> list[str]:
        sregs = snap.sregs
        if insn is None:
            return ["general protection fault (#GP)"]
        control_register = insn.mnemonic == "mov" and any(f"{r}" in insn.text for r in ("cr0", "cr3", "cr4", "dr"))
        if cpl == 3 and (insn.mnemonic in PRIVILEGED or control_register):
            return [f"`{insn.text}` is a privileged instruction and the CPU is at CPL3 (user mode): #GP"]
        if insn.mnemonic == "mov" and insn.text.split()[1].rstrip(",") in ("ds", "es", "fs", "gs", "ss"):
            source = insn.text.split(",")[-1].strip()
            selector = _register(snap.regs, source) & 0xFFFF if source.isalpha() else None
            if selector is not None and (selector & ~7) + 7 > sregs.gdt.limit:
                return [f"`{insn.text}` loads selector {selector:#x}, beyond the GDT limit {sregs.gdt.limit:#x} "
                        f"(the GDT at {sregs.gdt.base:#x} has {(sregs.gdt.limit + 1) // 8} descriptors): #GP"
                        f"({selector & 0xFFFC:#x})"]
            shown = f"selector {selector:#x}" if selector is not None else "a selector"
            return [f"`{insn.text}` loads {shown} whose descriptor in the GDT (base {sregs.gdt.base:#x}, limit "
                    f"{sregs.gdt.limit:#x}) is not usable for that register (null, not present, or wrong type or "
                    "privilege)"]
        if sregs.efer & EFER_LMA:
            for address in _memory_operands(insn, snap):
                if not _canonical(address):
                    return [f"`{insn.text}` accesses {address:#x}, a non-canonical address (bits 63:47 must all "
                            "be equal in 4-level paging): #GP"]
        code = f" (error code {error_code:#x})" if error_code else ""
        return [f"`{insn.text}` raised a general protection fault{code}"]

    def _page_fault(self, snap: CpuSnapshot, cr2: int, error_code: int | None) -> list[str]:
        sregs, regs = snap.sregs, snap.regs
        code = error_code or 0
        op = Op.EXECUTE if code & 0x10 else Op.WRITE if code & 2 else Op.READ
        access = Access(op, user=bool(code & 4))
        walk = translate(self.machine.memory.read, sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer, cr2, access)
        causes = [f"page fault at CR2={cr2:#x}: {describe_error_code(code)}", *walk.describe().splitlines()]
        width = 1 << (64 if sregs.efer & EFER_LMA else 32)
        stack = regs.rsp % width
        below = (stack - cr2) % width  # how far under the stack pointer the access was (pushes go down)
        if below <= 0x1000 or (cr2 - stack) % width < 0x100:
            if stack == 0:
                causes.append("the stack pointer is 0: the stack was never set up (a push wraps to the top of the "
                              "address space)")
            else:
                causes.append(f"CR2 is next to the stack pointer ({stack:#x}): the stack is in an unmapped or "
                              "read-only page")
        mode = paging_mode(sregs.cr0, sregs.cr4, sregs.efer)
        if mode is PagingMode.BIT32 and not sregs.cr4 & CR4_PSE:
            large = [e for e in walk.entries if e.level == "PDE" and e.value & 0x80]
            if large:
                causes.append(f"the PDE {large[0]} has PS=1 (a 4 MiB page) but CR4.PSE=0, so the CPU reads it as a "
                              "pointer to a page table: set CR4.PSE or map 4 KiB pages")
        return causes

    def _read_linear(self, snap: CpuSnapshot) -> Callable[[int, int], bytes]:
        """A reader of code at linear addresses as the snapshot's paging saw them (short where unmapped)."""
        memory, sregs = self.machine.memory, snap.sregs
        return lambda address, length: read_linear(memory.read, sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer,
                                                   address, length, EXECUTE)


def _short(event: object) -> str:
    vector = event.vector  # type: ignore[attr-defined]
    known = VECTORS.get(vector)
    name = known.mnemonic if known else f"INT {vector:#x}"
    code = event.error_code  # type: ignore[attr-defined]
    return f"{name}({code:#x})" if code is not None and known and known.error_code and vector != 8 else name


def _is_simd(insn: Instruction) -> bool:
    simd_groups = {"sse1", "sse2", "sse3", "ssse3", "sse41", "sse42", "sse4a", "avx", "avx2", "avx512", "mmx",
                   "fpu", "3dnow", "aes", "pclmul", "sha", "f16c", "fma"}
    return bool(simd_groups & set(insn.groups)) or (insn.mnemonic.startswith(X87_PREFIXES) and insn.mnemonic not in \
        ("fs", "femms"))


def _memory_operands(insn: Instruction, snap: CpuSnapshot) -> list[int]:
    import capstone
    from capstone import x86_const as cx

    regs = snap.regs
    names = {cx.X86_REG_RAX: "rax", cx.X86_REG_RBX: "rbx", cx.X86_REG_RCX: "rcx", cx.X86_REG_RDX: "rdx",
             cx.X86_REG_RSI: "rsi", cx.X86_REG_RDI: "rdi", cx.X86_REG_RSP: "rsp", cx.X86_REG_RBP: "rbp",
             cx.X86_REG_R8: "r8", cx.X86_REG_R9: "r9", cx.X86_REG_R10: "r10", cx.X86_REG_R11: "r11",
             cx.X86_REG_R12: "r12", cx.X86_REG_R13: "r13", cx.X86_REG_R14: "r14", cx.X86_REG_R15: "r15",
             cx.X86_REG_RIP: "rip"}
    addresses = []
    for op in insn.operands:
        if op.type != capstone.CS_OP_MEM:
            continue
        mem = op.mem
        base = getattr(regs, names[mem.base]) if mem.base in names else 0
        if mem.base == cx.X86_REG_RIP:
            base += len(insn.raw)
        index = getattr(regs, names[mem.index]) * mem.scale if mem.index in names else 0
        addresses.append((base + index + mem.disp) & 0xFFFFFFFFFFFFFFFF)
    return addresses


def _register(regs: object, name: str) -> int:
    """A register's value by its capstone name (eax, cx, r8d, al, ah …) from a kvm_regs-like object."""
    full = {"a": "rax", "b": "rbx", "c": "rcx", "d": "rdx"}
    name = name.lower()
    if name[-1] in "lh" and len(name) == 2 and name[0] in full:  # al, ah, bl …
        value = getattr(regs, full[name[0]])
        return (value >> 8) & 0xFF if name[1] == "h" else value & 0xFF
    if name.startswith("r") and name[1:2].isdigit():  # r8, r8d, r8w, r8b
        digits = name[1:].rstrip("dwb")
        value = getattr(regs, f"r{digits}")
        return value & {"d": 0xFFFFFFFF, "w": 0xFFFF, "b": 0xFF}.get(name[-1], (1 << 64) - 1)
    base = name.lstrip("er")
    key = {"ax": "rax", "bx": "rbx", "cx": "rcx", "dx": "rdx", "si": "rsi", "di": "rdi", "sp": "rsp",
           "bp": "rbp", "ip": "rip"}.get(base)
    if key is None:
        return 0
    value = getattr(regs, key)
    return value & (0xFFFFFFFF if name.startswith("e") else 0xFFFF if len(name) == 2 else (1 << 64) - 1)


def _canonical(address: int) -> bool:
    top = address >> 47
    return top in (0, 0x1FFFF)


def replay_on_software_cpu(machine: Machine, result: RunResult) -> RunResult | None:
    """Run the same guest with the same input on the software CPU, to see the exceptions KVM hid."""
    from ..devices.input import InputBuffer
    from ..emu.cpu import Emu
    from ..machine import MachineConfig, run_machines

    spec = machine.config.guest
    replay_input = InputBuffer(capacity=max(1, len(machine.input.consumed) if machine.input else 1))
    if machine.input is not None and machine.input.consumed:
        replay_input.feed(bytes(machine.input.consumed))
    replay_input.close()
    emu = Emu()
    try:
        replay = Machine(MachineConfig(spec, input_grace=machine.config.input_grace), emu, lambda data: None,
                         replay_input)
    except Exception:
        return None
    try:
        return run_machines([replay], timeout=max(2.0, 4 * result.wall_seconds + 1))[0]
    finally:
        replay.close()


def explain(machine: Machine, result: RunResult,
            symbols: Callable[[], SymbolTable | None] = lambda: None) -> list[str]:
    """The stop report for `result`: the explanation when there is one, else the plain report.
    `symbols` is called only when a report needs them (reading an ELF is not free)."""
    from .report import stop_report

    if result.stop.kind not in EXPLAINED:
        return stop_report(result)
    try:
        explanation = Explainer(machine, result, symbols()).explain()
    except Exception as err:  # a report must never crash the VMM: fall back to the plain one, and say why
        return [*stop_report(result), f"note: the fault explainer failed on this guest state ({err!r}); "
                "please report it"]
    return explanation.lines() if explanation is not None else stop_report(result)
