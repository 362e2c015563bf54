"""A GDB remote-serial-protocol stub (--gdb [HOST:]PORT), and the execution control behind it and --trace.

Three parts, bottom to top:

- the protocol, as pure functions: packet framing, checksums, acks, escaping,
  command parsing, the target description (tested without any guest);
- `GuestControl`, one per machine: the run loop's debug hook. The vCPU
  thread calls `checkpoint()` before every run; a pause request (from the
  stub, a breakpoint or a finished step) makes it wait there on a condition
  until the stub resumes it or the machine is stopped. Registers and memory
  are read and written from the stub's thread while the vCPU waits. It also
  drives the instruction trace (debug/trace.py);
- `GdbServer`: a listening socket and a thread that serves one gdb at a time.
  Each guest on the command line is one thread (id = guest index + 1); stops
  are all-stop: when one guest stops, the others are paused too.

Addresses are linear (segment base + offset), translated to guest-physical
through the guest's page tables when paging is on. In real mode `eip` is the
CPU's IP, an offset into CS: with CS ≠ 0, `x/i $pc` needs `$cs*16+$eip`.

Per accelerator: on the software CPU breakpoints are Unicorn code hooks on
their exact address, watchpoints memory hooks on the guest-physical range
they map to when inserted, single steps a per-instruction hook. On KVM
breakpoints and watchpoints use the debug registers DR0-DR3 (four in all;
breakpoints beyond four are found by single-stepping), where this host's
KVM honours them (measured, see trace.kvm_debug_support); watchpoints where
it does not, and read-only watchpoints always (x86 has none), are answered
as unsupported, so gdb falls back to its own (single-stepping) watchpoints.
"""

from __future__ import annotations

import enum
import errno
import functools
import itertools
import select
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from ..arch.x86.registers import CR0_PE, CR0_PG, EFER_LMA
from ..arch.x86.state import Mode
from ..arch.x86.walk import Access, Op, read_linear, translate
from ..errors import MinikvmError
from ..kvm.exits import DebugExit, Exit, HltExit, IoExit, MmioExit
from ..stop import StopKind, StopReason

if TYPE_CHECKING:
    from ..kvm.uapi import kvm_sregs
    from ..machine import Machine
    from .trace import InstructionTrace, KvmDebugSupport

# --- packets: framing, checksums, acks, escaping ----------------------------------------

PACKET_SIZE = 0x4000  # what qSupported advertises: the longest packet gdb may send us
_MAX_INCOMING = 2 * PACKET_SIZE + 64  # an X packet's escapes can double its data; more is garbage
INTERRUPT = 0x03  # Ctrl-C from gdb, outside any packet
_DEBUGGER_READ = Access(Op.READ, ac=True)  # gdb reads as the kernel would, user pages too (SMAP aside)

SIGINT, SIGILL, SIGTRAP, SIGABRT, SIGSEGV, SIGALRM = 2, 4, 5, 6, 11, 14

# Error replies: E followed by an errno value, two hex digits.
EPERM, EFAULT, EINVAL, ENOSPC = errno.EPERM, errno.EFAULT, errno.EINVAL, errno.ENOSPC


class PacketError(MinikvmError):
    """A malformed or unusable packet: the reply is `E<code>`."""

    def __init__(self, code: int, why: str) -> None:
        self.code = code
        super().__init__(why)


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def escape(data: bytes) -> bytes:
    """Binary data in a packet: '#', '$', '}' and '*' become '}' + (byte ^ 0x20)."""
    out = bytearray()
    for byte in data:
        if byte in b"#$}*":
            out += bytes((0x7D, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    out = bytearray()
    it = iter(data)
    for byte in it:
        if byte == 0x7D:
            following = next(it, None)
            if following is None:
                raise PacketError(EINVAL, "binary data ends in an escape character")
            out.append(following ^ 0x20)
        else:
            out.append(byte)
    return bytes(out)


def frame(payload: bytes) -> bytes:
    """'$payload#cs' (the payload as sent: never run-length encoded)."""
    return b"$" + payload + b"#" + b"%02x" % checksum(payload)


class Ack:
    pass


class Nak:
    pass


class Interrupt:
    pass


@dataclass(frozen=True)
class Packet:
    payload: bytes  # between '$' and '#', still escaped (only binary-data commands unescape)


@dataclass(frozen=True)
class Garbled:
    why: str  # a bad checksum or an overlong packet: answered with '-' (resend)


StreamEvent = Ack | Nak | Interrupt | Packet | Garbled
_HEX = frozenset(b"0123456789abcdefABCDEF")


class PacketReader:
    """Splits the bytes gdb sends into acks, naks, interrupts and packets, across any chunking."""

    def __init__(self) -> None:
        self._state = "idle"  # idle | data | check
        self._data = bytearray()
        self._check = bytearray()
        self._overlong = False

    def feed(self, data: bytes) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        for byte in data:
            if self._state == "idle":
                if byte == 0x24:  # '$'
                    self._start()
                elif byte == 0x2B:  # '+'
                    events.append(Ack())
                elif byte == 0x2D:  # '-'
                    events.append(Nak())
                elif byte == INTERRUPT:
                    events.append(Interrupt())
                # anything else between packets is line noise: ignored
            elif self._state == "data":
                if byte == 0x23:  # '#'
                    self._state = "check"
                elif byte == 0x24:  # a new '$' before '#': the packet so far was truncated
                    events.append(Garbled("truncated packet"))
                    self._start()
                elif len(self._data) < _MAX_INCOMING:
                    self._data.append(byte)
                else:
                    self._overlong = True
            elif byte == 0x24:  # '$' where a checksum digit belongs: cut short too
                events.append(Garbled("truncated packet"))
                self._start()
            else:
                self._check.append(byte)
                if len(self._check) == 2:
                    events.append(self._finish())
        return events

    def _start(self) -> None:
        self._state = "data"
        self._data.clear()
        self._check.clear()
        self._overlong = False

    def _finish(self) -> StreamEvent:
        self._state = "idle"
        if self._overlong:
            return Garbled(f"packet longer than {_MAX_INCOMING} bytes")
        if not all(c in _HEX for c in self._check):
            return Garbled("checksum is not two hex digits")
        payload = bytes(self._data)
        if int(self._check, 16) != checksum(payload):
            return Garbled("checksum mismatch")
        return Packet(payload)


# --- command arguments -----------------------------------------------------------------


def parse_hex(text: bytes, what: str = "number", limit: int = 1 << 64) -> int:
    if not text or len(text) > 32 or not all(c in _HEX for c in text):
        raise PacketError(EINVAL, f"{what} {text[:40]!r} is not a hex number")
    value = int(text, 16)
    if value >= limit:
        raise PacketError(EINVAL, f"{what} {value:#x} is out of range")
    return value


def parse_hex_bytes(text: bytes) -> bytes:
    if len(text) % 2 or not all(c in _HEX for c in text):
        raise PacketError(EINVAL, "data is not hex byte pairs")
    return bytes.fromhex(text.decode())


def _split(text: bytes, sep: bytes, count: int, what: str) -> list[bytes]:
    parts = text.split(sep, count - 1)
    if len(parts) != count:
        raise PacketError(EINVAL, f"{what}: expected {count} fields")
    return parts


def parse_memory_read(args: bytes) -> tuple[int, int]:
    """'addr,length' (m)."""
    addr, length = _split(args, b",", 2, "m")
    return parse_hex(addr, "address"), parse_hex(length, "length", 1 << 32)


def parse_memory_write(args: bytes) -> tuple[int, bytes]:
    """'addr,length:XX…' (M)."""
    return _parse_write(args, "M", parse_hex_bytes)


def parse_binary_write(args: bytes) -> tuple[int, bytes]:
    """'addr,length:binary' (X); the data is escaped."""
    return _parse_write(args, "X", unescape)


def _parse_write(args: bytes, command: str, decode: Callable[[bytes], bytes]) -> tuple[int, bytes]:
    where, data = _split(args, b":", 2, command)
    addr, length = parse_memory_read(where)
    values = decode(data)
    if len(values) != length:
        raise PacketError(EINVAL, f"{command}: {len(values)} bytes of data for length {length}")
    return addr, values


def parse_register_write(args: bytes) -> tuple[int, bytes]:
    """'n=XX…' (P)."""
    number, data = _split(args, b"=", 2, "P")
    return parse_hex(number, "register", 1 << 16), parse_hex_bytes(data)


def parse_breakpoint(args: bytes) -> tuple[int, int, int]:
    """'type,addr,kind[;cond…]' (Z/z) → (type, addr, kind); conditions are not evaluated here (gdb does)."""
    fields = args.split(b";", 1)[0]
    kind_type, addr, kind = _split(fields, b",", 3, "Z")
    return parse_hex(kind_type, "type", 5), parse_hex(addr, "address"), parse_hex(kind, "kind", 1 << 16)


def parse_thread_id(text: bytes) -> int:
    """A thread id: -1 (all), 0 (any), or a positive hex number (no multiprocess 'p' form)."""
    if text == b"-1":
        return -1
    return parse_hex(text, "thread id", 1 << 31)


def parse_vcont(args: bytes) -> list[tuple[str, int]]:
    """';action[:thread]…' after 'vCont' → [(c|s|t, thread)], -1 for 'every other thread'."""
    if not args.startswith(b";"):
        raise PacketError(EINVAL, "vCont without actions")
    actions = []
    for item in args[1:].split(b";"):
        action, _, thread = item.partition(b":")
        if not action:
            raise PacketError(EINVAL, "empty vCont action")
        verb = chr(action[0])
        if verb in "CS":  # with a signal: there are no signals to deliver to a guest; like c/s
            parse_hex(action[1:], "signal", 256)
            verb = verb.lower()
        elif verb not in "cst" or len(action) != 1:
            raise PacketError(EINVAL, f"vCont action {action[:20]!r} is not supported")
        actions.append((verb, parse_thread_id(thread) if thread else -1))
    return actions


def parse_xfer_read(args: bytes) -> tuple[str, str, int, int]:
    """'object:read:annex:offset,length' after 'qXfer:'."""
    obj, op, annex, span = _split(args, b":", 4, "qXfer")
    if op != b"read":
        raise PacketError(EINVAL, "qXfer: only reads are supported")
    offset, length = parse_memory_read(span)
    return obj.decode("ascii", "replace"), annex.decode("ascii", "replace"), offset, length


def parse_features(args: bytes) -> set[str]:
    """gdb's qSupported features ('swbreak+;xmlRegisters=i386;…') → the names it supports."""
    return {item[:-1].decode("ascii", "replace") for item in args.split(b";") if item.endswith(b"+")}


# --- registers and the target description -----------------------------------------------


@dataclass(frozen=True)
class Reg:
    name: str
    bits: int
    type: str
    source: str | None  # the kvm_regs/kvm_sregs value it shows; None: not available (x87)
    group: str | None = None
    feature: str = "core"

    @property
    def writable(self) -> bool:
        return self.source in _WRITABLE


_GPR_FIELDS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", *(f"r{n}" for n in range(8, 16)))
_WRITABLE = frozenset((*_GPR_FIELDS, "rip", "rflags"))
_SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")
_X87 = ([Reg(f"st{i}", 80, "i387_ext", None, "float") for i in range(8)]
        + [Reg(n, 32, "int", None, "float") for n in ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg",
                                                       "fooff", "fop")])


def _system(bits: int) -> list[Reg]:
    return [*(Reg(n, bits, f"int{bits}", n, "system", "sys") for n in ("cr0", "cr2", "cr3", "cr4")),
            Reg("efer", 64, "int64", "efer", "system", "sys")]


I386_REGS = [
    *(Reg(n, 32, "int32", s) for n, s in (("eax", "rax"), ("ecx", "rcx"), ("edx", "rdx"), ("ebx", "rbx"))),
    Reg("esp", 32, "data_ptr", "rsp"), Reg("ebp", 32, "data_ptr", "rbp"),
    Reg("esi", 32, "int32", "rsi"), Reg("edi", 32, "int32", "rdi"),
    Reg("eip", 32, "code_ptr", "rip"), Reg("eflags", 32, "i386_eflags", "rflags"),
    *(Reg(n, 32, "int32", n) for n in _SEGMENTS), *_X87, *_system(32)]
AMD64_REGS = [
    *(Reg(n, 64, "int64", n) for n in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi")),
    Reg("rbp", 64, "data_ptr", "rbp"), Reg("rsp", 64, "data_ptr", "rsp"),
    *(Reg(f"r{n}", 64, "int64", f"r{n}") for n in range(8, 16)),
    Reg("rip", 64, "code_ptr", "rip"), Reg("eflags", 32, "i386_eflags", "rflags"),
    *(Reg(n, 32, "int32", n) for n in _SEGMENTS), *_X87, *_system(64)]

_EFLAGS_FIELDS = (("CF", 0), ("", 1), ("PF", 2), ("AF", 4), ("ZF", 6), ("SF", 7), ("TF", 8), ("IF", 9),
                  ("DF", 10), ("OF", 11), ("NT", 14), ("RF", 16), ("VM", 17), ("AC", 18), ("VIF", 19),
                  ("VIP", 20), ("ID", 21))
_FEATURES = {"core": "org.gnu.gdb.i386.core", "sys": "org.minikvm.gdb.x86.sys"}


@dataclass(frozen=True)
class Layout:
    """The registers of `g`, in order, and the target description that says so."""

    architecture: str  # i8086 (real-mode disassembly), i386, i386:x86-64
    regs: tuple[Reg, ...]

    def target_xml(self) -> bytes:
        lines = ['<?xml version="1.0"?>', '<!DOCTYPE target SYSTEM "gdb-target.dtd">', "<target>",
                 f"  <architecture>{self.architecture}</architecture>", "  <osabi>none</osabi>"]
        for key, feature in _FEATURES.items():
            lines.append(f'  <feature name="{feature}">')
            if key == "core":
                lines.append('    <flags id="i386_eflags" size="4">')
                lines += [f'      <field name="{n}" start="{b}" end="{b}"/>' for n, b in _EFLAGS_FIELDS]
                lines.append("    </flags>")
            for number, reg in enumerate(self.regs):
                if reg.feature == key:
                    group = f' group="{reg.group}"' if reg.group else ""
                    lines.append(f'    <reg name="{reg.name}" bitsize="{reg.bits}" type="{reg.type}" '
                                 f'regnum="{number}"{group}/>')
            lines.append("  </feature>")
        lines.append("</target>")
        return ("\n".join(lines) + "\n").encode()

    def encode(self, values: dict[str, int]) -> bytes:
        return b"".join(self.encode_one(reg, values) for reg in self.regs)

    @staticmethod
    def encode_one(reg: Reg, values: dict[str, int]) -> bytes:
        size = reg.bits // 8
        if reg.source is None or reg.source not in values:
            return b"xx" * size  # 'unavailable'
        return (values[reg.source] & ((1 << reg.bits) - 1)).to_bytes(size, "little").hex().encode()


LAYOUTS = {arch: Layout(arch, tuple(AMD64_REGS if arch == "i386:x86-64" else I386_REGS))
           for arch in ("i8086", "i386", "i386:x86-64")}


def choose_layout(architectures: Sequence[str]) -> Layout:
    """One description for every thread: 64-bit if any guest is, 16-bit disassembly if all are real mode."""
    if "i386:x86-64" in architectures:
        return LAYOUTS["i386:x86-64"]
    if architectures and all(a == "i8086" for a in architectures):
        return LAYOUTS["i8086"]
    return LAYOUTS["i386"]


# --- stop and exit replies ----------------------------------------------------------------


@dataclass(frozen=True)
class StopEvent:
    signal: int = SIGTRAP
    kind: str = ""  # swbreak, hwbreak, watch, rwatch, awatch (the stop reply says which)
    addr: int | None = None  # the watched address
    own: bool = False  # the guest's own stop (a breakpoint, a step), not a pause the stub asked for


def stop_reply(event: StopEvent, tid: int, features: set[str]) -> bytes:
    text = f"T{event.signal:02x}"
    if event.kind in ("watch", "rwatch", "awatch") and event.addr is not None:
        text += f"{event.kind}:{event.addr:x};"
    elif event.kind in ("swbreak", "hwbreak") and event.kind in features:
        text += f"{event.kind}:;"
    return (text + f"thread:{tid:x};").encode()


_SIGNALS = {StopKind.TRIPLE_FAULT: SIGSEGV, StopKind.INTERNAL_ERROR: SIGILL, StopKind.FAIL_ENTRY: SIGABRT,
            StopKind.ACCEL_ERROR: SIGABRT, StopKind.UNHANDLED_EXIT: SIGABRT, StopKind.TIMEOUT: SIGALRM,
            StopKind.INTERRUPTED: SIGINT}


def exit_reply(stops: Sequence[StopReason]) -> bytes:
    """W/X for the end of every guest: the one the process exit status comes from decides."""
    ranked = sorted(stops, key=lambda s: {130: 0, 1: 1, 124: 2}.get(s.status, 3))
    if not ranked or ranked[0].clean:
        return b"W00"
    stop = ranked[0]
    if stop.kind in _SIGNALS:
        return b"X%02x" % _SIGNALS[stop.kind]  # the guest crashed or was stopped: gdb names the signal
    return b"W%02x" % ((stop.exit_code or 1) & 0xFF)  # it ended itself, with an error status


def console_output(text: str) -> bytes:
    """An 'O' packet: text gdb prints while the target runs."""
    return b"O" + text.encode("utf-8", "replace").hex().encode()


# --- execution control of one machine -------------------------------------------------------


class TargetError(MinikvmError):
    def __init__(self, code: int, why: str) -> None:
        self.code = code
        super().__init__(why)


class State(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    EXITING = "exiting"  # stopped while paused; FINISHED follows
    FINISHED = "finished"


_SEQUENCE = itertools.count(1)
_RFLAGS_RF = 1 << 16
_FAULTS = {StopKind.TRIPLE_FAULT, StopKind.INTERNAL_ERROR, StopKind.FAIL_ENTRY, StopKind.ACCEL_ERROR,
           StopKind.UNHANDLED_EXIT}
_PREFIXES = frozenset(b"\x26\x2e\x36\x3e\x64\x65\x66\x67\xf0\xf2\xf3")


def _is_hlt(code: bytes, bits: int) -> bool:
    for byte in code:
        if byte in _PREFIXES or (bits == 64 and 0x40 <= byte <= 0x4F):
            continue
        return byte == 0xF4
    return False


def _cpl(sregs: kvm_sregs) -> int:
    return sregs.cs.selector & 3 if sregs.cr0 & CR0_PE else 0


def _bits(sregs: kvm_sregs) -> int:
    if sregs.cs.l and sregs.efer & EFER_LMA:
        return 64
    return 32 if sregs.cr0 & CR0_PE and sregs.cs.db else 16


def _enters_cpl3(code: bytes, bits: int, rsp: int, sregs: kvm_sregs,
                 read: Callable[[int, int], bytes]) -> str | None:
    """'iretq' when the instruction in `code` returns to CPL3 (IRET to an RPL-3 CS, SYSRET, SYSEXIT)."""
    if not sregs.cr0 & CR0_PE:
        return None
    size, wide, i = (2 if bits == 16 else 4), False, 0
    while i < len(code) and (code[i] in _PREFIXES or (bits == 64 and 0x40 <= code[i] <= 0x4F)):
        if code[i] == 0x66:
            size = 4 if bits == 16 else 2
        wide = bits == 64 and 0x40 <= code[i] <= 0x4F and bool(code[i] & 8)
        i += 1
    opcode = code[i:i + 2]
    if opcode in (b"\x0f\x07", b"\x0f\x35"):
        return "sysret" if opcode == b"\x0f\x07" else "sysexit"
    if opcode[:1] != b"\xcf":
        return None
    size = 8 if wide else size
    stack = rsp if bits == 64 else (sregs.ss.base + (rsp & (0xFFFF if bits == 16 else 0xFFFFFFFF))) & 0xFFFFFFFF
    frame = read(stack, 2 * size)  # (E/R)IP, then CS
    if len(frame) < 2 * size:
        return None
    return ("iretq" if size == 8 else "iret") if int.from_bytes(frame[size:], "little") & 3 == 3 else None


def _aligned_pieces(addr: int, length: int) -> list[tuple[int, int]]:
    """[addr, addr+length) as naturally aligned 1/2/4/8-byte pieces (what a debug register watches)."""
    pieces = []
    end = addr + length
    while addr < end:
        size = 8
        while size > 1 and (addr % size or addr + size > end):
            size //= 2
        pieces.append((addr, size))
        addr += size
    return pieces


class GuestControl:
    """Pause, resume, step, breakpoints and the trace for one machine: the run loop's debug hook."""

    def __init__(self, machine: Machine, tid: int, trace: InstructionTrace | None = None, wait: bool = False,
                 note: Callable[[str], None] | None = None) -> None:
        self.machine = machine
        self.tid = tid
        self.name = machine.name
        self.loop = machine.loop
        vcpu = machine.vcpu
        assert vcpu is not None
        self.vcpu: Any = vcpu  # kvm.system.Vcpu or emu.cpu.EmuVcpu: the same calls, plus each one's own
        self.kvm = machine.accel.name == "kvm"
        self.trace = trace
        self.note = note or (lambda text: None)
        self._cond = threading.Condition()
        self.state = State.RUNNING
        self.event: StopEvent | None = StopEvent(SIGTRAP) if wait else None
        self.stop: StopReason | None = None
        self.sequence = 0  # when it last paused: the stub reports the earliest stop
        self.reported = False  # gdb was told about `event`
        self._pause_requested = wait
        self._pause_signal = SIGTRAP
        self._notify: Callable[[], None] = lambda: None
        self._closed = False
        self._dirty = True  # set up the accelerator's debugging before the next run
        self._resuming = False  # the next run starts where gdb stopped: step over a breakpoint there
        self._user_step = False
        self.attached = False  # a gdb is connected: breakpoint and step stops are reported, not skipped
        self.breakpoints: dict[int, set[int]] = {}  # linear address → gdb Z types (0, 1)
        self.watchpoints: dict[tuple[int, int, int], list] = {}  # (type, addr, length) → what implements it
        # KVM: the debug registers, and breakpoints beyond them (checked while single-stepping)
        self._slots: list[tuple[int, int, int, tuple]] = []  # (addr, DR kind, length, owner)
        self._loaded: list[tuple[int, int, int, tuple]] = []  # the slots in DR0-DR3 now, in order
        self._overflow: set[int] = set()
        self._stepping = False  # this run single-steps
        self._stepping_over: int | None = None
        self._current: tuple[int, bytes, int] | None = None  # (pc, code, bits) about to run, while stepping
        self._io_pending = False
        self._trace_suspended = False
        self._said_cpl3 = False
        self._bits_key: tuple[int, int] | None = None
        self._emu_bits = 32
        self._emu_starts = 0
        self._emu_values: tuple[int, ...] = ()
        self._emu_key_at: tuple[int, int] | None = None

    @functools.cached_property
    def support(self) -> KvmDebugSupport:
        """What this host's KVM does for a debugger (measured the first time anyone asks)."""
        from .trace import kvm_debug_support

        return kvm_debug_support(self.machine.boot.mode)

    def attach(self, notify: Callable[[], None]) -> None:
        """The stub's wake-up call: made when this guest pauses or finishes."""
        self._notify = notify

    # --- the run loop's hook (vCPU thread) ----------------------------------------------

    def checkpoint(self) -> None:
        if self._dirty:
            # A reconfiguration may have kicked the vCPU out of its run: take that request back
            # (a stop or a pause requested meanwhile is seen below, or by the run loop).
            self.vcpu.cancel_exit_request()
            self._configure()
        while self._pause_requested and self.loop.stop is None:
            if self._io_pending:
                # KVM finishes an I/O instruction in the next KVM_RUN; one with immediate_exit set
                # does only that, so the registers a debugger reads are whole.
                self._io_pending = False
                self.vcpu.request_exit()
                return
            self._pause()
            self.vcpu.cancel_exit_request()
            if self._dirty and self.loop.stop is None:
                self._configure()

    def _pause(self) -> None:
        with self._cond:
            self._pause_requested = False
            if self.loop.stop is not None:
                return
            if self.event is None:
                self.event = StopEvent(self._pause_signal)
            self.state = State.PAUSED
            self.sequence = next(_SEQUENCE)
            self._cond.notify_all()
        self._notify()
        with self._cond:
            while self.state is State.PAUSED and self.loop.stop is None:
                self._cond.wait()
            if self.state is State.PAUSED:
                self.state = State.EXITING

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def on_exit(self, exit: Exit) -> Exit | None:
        if type(exit) is DebugExit:
            return self._kvm_debug(exit) if self.kvm else self._emu_debug(exit)
        if self.kvm:
            kind = type(exit)
            if self._stepping and kind in (IoExit, MmioExit):
                self._kvm_io_boundary()
            elif self._trace_suspended and self.trace is not None:
                self._dirty = True  # maybe back at CPL0: look again before the next run
            self._io_pending = kind in (IoExit, MmioExit)
        return exit

    def finished(self, stop: StopReason) -> None:
        try:
            if self.trace is not None:
                self._finish_trace(stop)
        finally:
            with self._cond:
                self.state = State.FINISHED
                self.stop = stop
                self._cond.notify_all()
            self._notify()

    # --- the stub's side (its own thread) -------------------------------------------------

    def request_pause(self, signal: int = SIGINT) -> None:
        with self._cond:
            if self.state is not State.RUNNING or self._pause_requested:
                return
            self._pause_signal = signal
            self._pause_requested = True
        self.vcpu.request_exit()
        self.loop.kick()

    def wait_paused(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.state is not State.RUNNING, timeout)

    def resume(self, step: bool = False) -> None:
        with self._cond:
            if self.state is not State.PAUSED:
                return
            self._user_step = step
            self.event = None
            self._dirty = self._resuming = True
            self.state = State.RUNNING
            self._cond.notify_all()

    @property
    def alive(self) -> bool:
        return self.state in (State.RUNNING, State.PAUSED)

    def close(self) -> None:
        """The stub is going away: no more access (the machine is about to be closed)."""
        with self._cond:
            self._closed = True

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """Hold the vCPU still: it is paused (or its run is over) until the block ends."""
        with self._cond:
            if self._closed or self.state not in (State.PAUSED, State.FINISHED):
                raise TargetError(EPERM, f"{self.name} is {self.state.value}, not stopped")
            yield

    def architecture(self) -> str:
        try:
            with self.stopped():
                sregs = self.vcpu.get_sregs()
            if sregs.efer & EFER_LMA:
                return "i386:x86-64"
            if not sregs.cr0 & CR0_PE:
                return "i8086"
            return "i386"
        except (TargetError, MinikvmError):
            mode = self.machine.boot.mode
            return {Mode.LONG: "i386:x86-64", Mode.REAL: "i8086"}.get(mode, "i386")

    def register_values(self) -> dict[str, int]:
        with self.stopped():
            regs, sregs = self.vcpu.get_regs(), self.vcpu.get_sregs()
        values = {name: getattr(regs, name) for name in (*_GPR_FIELDS, "rip", "rflags")}
        values.update({name: getattr(sregs, name).selector for name in _SEGMENTS})
        values.update(cr0=sregs.cr0, cr2=sregs.cr2, cr3=sregs.cr3, cr4=sregs.cr4, efer=sregs.efer)
        return values

    def write_register(self, source: str, value: int) -> None:
        if source not in _WRITABLE:
            raise TargetError(EPERM, f"register {source} cannot be written from gdb")
        with self.stopped():
            regs = self.vcpu.get_regs()
            setattr(regs, source, value & 0xFFFF_FFFF_FFFF_FFFF)
            self.vcpu.set_regs(regs)
            self._dirty = True

    def read_memory(self, addr: int, length: int) -> bytes:
        """As much of [addr, addr+length) as is mapped and backed by RAM, from the start."""
        with self.stopped():
            return self._read_linear(addr, length, self.vcpu.get_sregs())

    def write_memory(self, addr: int, data: bytes) -> None:
        with self.stopped():
            sregs = self.vcpu.get_sregs()
            pieces = []
            offset = 0
            while offset < len(data):
                linear = addr + offset
                chunk = min(len(data) - offset, 0x1000 - (linear & 0xFFF))
                phys = self._physical(linear, sregs)
                if phys is None or not self.machine.memory.contains(phys, chunk):
                    raise TargetError(EFAULT, f"{linear:#x} is not mapped to guest RAM")
                pieces.append((phys, data[offset:offset + chunk]))
                offset += chunk
            for phys, piece in pieces:
                self.machine.memory.write(phys, piece)
            if not self.kvm:
                self.vcpu.invalidate_code()

    def can_step(self) -> bool:
        """Can the vCPU single-step where it is? (Not on KVM hosts that cannot at CPL3.)"""
        if not self.kvm:
            return True
        with self.stopped():
            _, code, bits, _, values, sregs = self._kvm_sample()
        return self._kvm_step_blocked(code, bits, values[6], sregs) is None

    def insert(self, kind: int, addr: int, length: int) -> bool:
        """Z: False when this accelerator has no such thing (gdb is told ''); TargetError when it cannot now."""
        with self.stopped():
            if kind in (0, 1):
                if addr not in self.breakpoints:
                    if self.kvm:
                        self._kvm_add_breakpoint(addr)
                    self.breakpoints[addr] = set()
                self.breakpoints[addr].add(kind)
            else:
                key = (kind, addr, length)
                if key not in self.watchpoints:
                    if length == 0 or length > 0x10000:
                        raise TargetError(EINVAL, f"watchpoint length {length}")
                    pieces = self._kvm_watch(kind, addr, length) if self.kvm else self._emu_watch(kind, addr, length)
                    if pieces is None:
                        return False
                    self.watchpoints[key] = pieces
            self._dirty = True
            return True

    def remove(self, kind: int, addr: int, length: int) -> bool:
        with self.stopped():
            if kind in (0, 1):
                kinds = self.breakpoints.get(addr)
                if kinds is not None:
                    kinds.discard(kind)
                    if not kinds:
                        del self.breakpoints[addr]
                        self._slots = [s for s in self._slots if s[3] != ("break", addr)]
                        self._overflow.discard(addr)
            else:
                if self.kvm and (kind == 3 or not self.support.watchpoints):
                    return False
                self.watchpoints.pop((kind, addr, length), None)
                self._slots = [s for s in self._slots if s[3] != ("watch", kind, addr, length)]
            self._dirty = True
            return True

    def clear_debugging(self) -> None:
        """gdb went away: no breakpoints, no stepping (the trace stays)."""
        with self._cond:
            self.attached = False
            self.breakpoints.clear()
            self.watchpoints.clear()
            self._slots = []
            self._overflow = set()
            self._user_step = False
            self._dirty = True
            running = self.state is State.RUNNING
        if running:  # out of the run, so the accelerator drops them now, not at the next exit
            self.vcpu.request_exit()
            self.loop.kick()

    # --- memory through the guest's page tables --------------------------------------------

    def _physical(self, linear: int, sregs: kvm_sregs) -> int | None:
        if not sregs.cr0 & CR0_PG:
            return linear
        try:
            walk = translate(self.machine.memory.read, sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer, linear,
                             _DEBUGGER_READ)
        except ValueError:  # wider than this paging mode's linear addresses
            return None
        return walk.phys

    def _read_linear(self, addr: int, length: int, sregs: kvm_sregs) -> bytes:
        return read_linear(self.machine.memory.read, sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer, addr, length,
                           _DEBUGGER_READ)

    # --- KVM ----------------------------------------------------------------------------------

    def _kvm_add_breakpoint(self, addr: int) -> None:
        from ..kvm.system import DEBUG_SLOTS, DR_EXECUTE

        if self.support.breakpoints and len(self._slots) < DEBUG_SLOTS:
            self._slots.append((addr, DR_EXECUTE, 1, ("break", addr)))
        elif self.support.single_step:
            self._overflow.add(addr)  # found by single-stepping: exact, slow
        else:
            raise TargetError(ENOSPC, "no debug register is free and this host's KVM cannot single-step")

    def _kvm_watch(self, kind: int, addr: int, length: int) -> list | None:
        from ..kvm.system import DEBUG_SLOTS, DR_ACCESS, DR_WRITE

        if kind == 3 or not self.support.watchpoints:
            return None  # x86 debug registers have no read-only watchpoints
        pieces = _aligned_pieces(addr, length)
        if len(self._slots) + len(pieces) > DEBUG_SLOTS:
            raise TargetError(ENOSPC, "not enough free debug registers for this watchpoint")
        dr_kind = DR_WRITE if kind == 2 else DR_ACCESS
        owner = ("watch", kind, addr, length)
        self._slots += [(a, dr_kind, n, owner) for a, n in pieces]
        return pieces

    def _kvm_step_blocked(self, code: bytes, bits: int, rsp: int, sregs: kvm_sregs) -> str | None:
        """Why KVM must not single-step the next instruction here, or None.

        Hosts such as kvm-pvm cannot step CPL3 code (measured): the debug exception goes into
        the guest, or the step is lost and CPL3 code runs unseen. So stepping stops at CPL3
        and before an instruction that enters it.
        """
        from .trace import kvm_steps_at_cpl3

        if not self.support.single_step:
            return f"this host's KVM cannot single-step {self.machine.boot.mode.label}"
        if kvm_steps_at_cpl3(bool(sregs.efer & EFER_LMA)):
            return None
        if _cpl(sregs) == 3:
            return "CPL3 code"
        entering = _enters_cpl3(code, bits, rsp, sregs, lambda a, n: self._read_linear(a, n, sregs))
        return f"{entering} into CPL3 code" if entering else None

    def _kvm_sample(self) -> tuple[int, bytes, int, tuple[str, ...], tuple[int, ...], kvm_sregs]:
        from .trace import NAMES_WIDE

        vcpu = self.vcpu
        regs, sregs = vcpu.get_regs(), vcpu.get_sregs()
        bits = _bits(sregs)
        pc = regs.rip if bits == 64 else (sregs.cs.base + regs.rip) & 0xFFFFFFFF
        values = (regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rsp, regs.rbp,
                  regs.r8, regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15, regs.rflags,
                  sregs.cs.selector, sregs.ss.selector, sregs.ds.selector, sregs.es.selector,
                  sregs.fs.selector, sregs.gs.selector, sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4)
        return pc, self._read_linear(pc, 15, sregs), bits, NAMES_WIDE, values, sregs

    def _configure(self) -> None:
        self._dirty = False
        if self.kvm:
            self._configure_kvm()
        else:
            self._configure_emu()

    def _configure_kvm(self) -> None:
        from ..kvm.system import DR_EXECUTE

        if self.trace is None and not self._slots and not self._overflow and not self._user_step:
            if self._stepping or self._loaded:  # nothing to debug (any more): plain runs
                self.vcpu.set_debug(False, [])
            self._stepping, self._loaded, self._current, self._resuming = False, [], None, False
            return
        pc, code, bits, names, values, sregs = self._kvm_sample()
        blocked = self._kvm_step_blocked(code, bits, values[6], sregs)
        can_step = blocked is None
        if self.trace is not None:
            if blocked is not None and not self._trace_suspended:
                self._suspend_trace(pc, blocked)
            elif can_step and self._trace_suspended:
                self._trace_suspended = False
                self.trace.gap(f"… traced again from {pc:#x}")
        tracing = self.trace is not None and not self._trace_suspended
        resuming, self._resuming = self._resuming, False
        step_over = pc if resuming and any(a == pc and k == DR_EXECUTE for a, k, _, _ in self._slots) else None
        if step_over is not None and not can_step:
            regs = self.vcpu.get_regs()
            regs.rflags |= _RFLAGS_RF  # the CPU then ignores an instruction breakpoint for one instruction
            self.vcpu.set_regs(regs)
            step_over = None
        self._stepping_over = step_over
        step = can_step and (self._user_step or step_over is not None or tracing or bool(self._overflow))
        self._loaded = [s for s in self._slots if not (s[1] == DR_EXECUTE and s[0] == step_over)]
        self.vcpu.set_debug(step, [(a, k, n) for a, k, n, _ in self._loaded])
        self._stepping = step
        self._current = (pc, code, bits) if step else None
        if tracing and step and self.trace is not None and self.trace.pending_pc != pc:
            self.trace.drop_pending()
            self.trace.begin(pc, code, bits, names, values)

    def _suspend_trace(self, pc: int, why: str) -> None:
        assert self.trace is not None
        self._trace_suspended = True
        self.trace.drop_pending()
        self.trace.gap(f"… {why} at {pc:#x}: not traced (this host's KVM cannot single-step CPL3 code)")
        if not self._said_cpl3:
            self._said_cpl3 = True
            self.note(f"this host's KVM cannot single-step CPL3 code (it would triple-fault the guest or lose "
                      f"the step): the trace pauses while the guest runs at CPL3 (first at {pc:#x})")

    def _kvm_stepped(self) -> Exit | None:
        """One instruction completed under single-step; returns an exit to dispatch in place of the step."""
        done = self._current
        pc, code, bits, names, values, sregs = self._kvm_sample()
        if self.trace is not None and not self._trace_suspended:
            self.trace.begin(pc, code, bits, names, values)
        self._current = (pc, code, bits)
        if self._stepping_over is not None:
            self._stepping_over = None
            self._dirty = True  # the breakpoint goes back into its debug register before the next run
        if self._kvm_step_blocked(code, bits, values[6], sregs):
            self._dirty = True  # at, or about to enter, CPL3 where this host cannot step: stop stepping
        if done is not None and _is_hlt(done[1], done[2]):
            # KVM skips a stepped HLT to report the step instead of halting: halt now.
            if getattr(self.machine, "in_kernel_irqchip", False):
                from ..kvm.uapi import KVM_MP_STATE_HALTED

                self.vcpu.set_mp_state(KVM_MP_STATE_HALTED)
            else:
                self._user_step = False
                return HltExit()
        if self._user_step:
            self._post(StopEvent(SIGTRAP))
        elif pc in self._overflow:
            self._post(StopEvent(SIGTRAP, "swbreak"))
        return None

    def _kvm_io_boundary(self) -> None:
        """An I/O exit while single-stepping: if RIP already moved past the instruction (some hosts
        complete OUT before exiting), that instruction is done and no step exit will say so."""
        if self._current is None:
            return
        regs, sregs = self.vcpu.get_regs(), self.vcpu.get_sregs()
        pc = regs.rip if _bits(sregs) == 64 else (sregs.cs.base + regs.rip) & 0xFFFFFFFF
        if pc != self._current[0]:
            self._kvm_stepped()

    def _kvm_debug(self, exit: DebugExit) -> Exit | None:
        from ..kvm.system import DR6_BS

        replacement = self._kvm_stepped() if exit.dr6 & DR6_BS and self._stepping else None
        if replacement is not None:
            return replacement
        for n, (_, _, _, owner) in enumerate(self._loaded):
            if exit.dr6 & (1 << n):
                if owner[0] == "break":
                    kinds = self.breakpoints.get(owner[1], {0})
                    self._post(StopEvent(SIGTRAP, "swbreak" if 0 in kinds else "hwbreak"))
                else:
                    kind = {2: "watch", 3: "rwatch", 4: "awatch"}[owner[1]]
                    self._post(StopEvent(SIGTRAP, kind, owner[2]))
                return None
        if not exit.dr6 & (DR6_BS | 0xF):
            return exit  # not ours: the run loop reports it
        return None

    # --- the software CPU -------------------------------------------------------------------

    def _emu_watch(self, kind: int, addr: int, length: int) -> list:
        """Unicorn's memory hooks see guest-physical addresses: the range as it is mapped now."""
        sregs = self.vcpu.get_sregs()
        pieces = []
        offset = 0
        name = {2: "watch", 3: "rwatch", 4: "awatch"}[kind]
        while offset < length:
            linear = addr + offset
            chunk = min(length - offset, 0x1000 - (linear & 0xFFF))
            phys = self._physical(linear, sregs)
            if phys is None:
                raise TargetError(EFAULT, f"{linear:#x} is not mapped")
            pieces.append((phys, chunk, name, addr))
            offset += chunk
        return pieces

    def _configure_emu(self) -> None:
        vcpu = self.vcpu
        regs = vcpu.get_regs()
        sregs = vcpu.get_sregs()
        bits = _bits(sregs)
        pc = regs.rip if bits == 64 else (sregs.cs.base + regs.rip) & 0xFFFFFFFF
        breakpoints = set(self.breakpoints)
        watches = [piece for pieces in self.watchpoints.values() for piece in pieces]
        resuming, self._resuming = self._resuming, False
        vcpu.set_debug(step=self._user_step, breakpoints=breakpoints, watchpoints=watches,
                       on_instruction=self._emu_instruction if self.trace is not None else None,
                       skip_at=pc if resuming and pc in breakpoints else None)

    def _emu_instruction(self, address: int, size: int) -> None:
        """Unicorn's per-instruction hook, while tracing: the state before the instruction at `address`."""
        vcpu = self.vcpu
        values = vcpu.debug_registers()
        names = vcpu.debug_register_names
        if self._emu_key_at is None:
            self._emu_key_at = (names.index("cs"), names.index("cr0"))
        key = (values[self._emu_key_at[0]], values[self._emu_key_at[1]])  # code size changes only with these
        if key != self._bits_key:
            self._bits_key = key
            self._emu_bits = _bits(vcpu.get_sregs())
        try:
            code = vcpu.view.read(address, size)
        except MinikvmError:
            code = b""
        trace = self.trace
        assert trace is not None
        starts = vcpu.starts
        if starts != self._emu_starts and address == trace.pending_pc and values == self._emu_values:
            trace.drop_pending()  # the slice ended between the hook and the instruction: it runs now
        self._emu_starts, self._emu_values = starts, values
        trace.begin(address, code, self._emu_bits, names, values)

    def _emu_debug(self, exit: DebugExit) -> Exit | None:
        hit = self.vcpu.debug_hit
        if exit.exception == 3:
            kinds = self.breakpoints.get(exit.pc, {0})
            self._post(StopEvent(SIGTRAP, "swbreak" if 0 in kinds else "hwbreak"))
        elif hit is not None:
            watched, kind = hit
            self._post(StopEvent(SIGTRAP, kind, watched))  # type: ignore[arg-type]
        else:
            self._post(StopEvent(SIGTRAP))
        return None

    # --- both ------------------------------------------------------------------------------

    def _post(self, event: StopEvent) -> None:
        """A stop of the guest's own making (vCPU thread): pause at the next checkpoint."""
        self._user_step = False
        if not self.attached:  # gdb has just gone: step over whatever stopped us, and run on
            self._dirty = self._resuming = True
            return
        self.event = replace(event, own=True)
        self.reported = False
        self._pause_requested = True

    def _finish_trace(self, stop: StopReason) -> None:
        trace = self.trace
        assert trace is not None
        names: Sequence[str] | None = None
        values: Sequence[int] | None = None
        linear_stop = None
        try:
            if self.kvm:
                _, _, bits, names, values, sregs = self._kvm_sample()
                cs_base = sregs.cs.base
            else:
                names = self.vcpu.debug_register_names
                values = self.vcpu.debug_registers()
                cs_base = self.vcpu.get_sregs().cs.base
            if stop.rip is not None:
                linear_stop = (cs_base + stop.rip) & 0xFFFFFFFF if stop.rip < 1 << 32 else stop.rip
        except MinikvmError:
            pass
        if self._trace_suspended and linear_stop is not None and trace.pending_pc is None and values is not None:
            # It ended in code KVM could not step: the instruction it stopped on, after the gap.
            trace.begin(linear_stop, self._read_linear(linear_stop, 15, sregs), bits, names or (), values)
        # The instruction begun last ran when the guest stopped on it (HLT, the exit OUT, a fault),
        # not when the stop came between instructions (a timeout, or after an OUT completed).
        include = stop.kind in _FAULTS or (linear_stop is not None and linear_stop == trace.pending_pc)
        trace.finish(names, values, include, stop.kind.label if include else "", ended=stop.message)
        if not include and linear_stop is not None:
            trace.annotate(linear_stop, stop.kind.label)  # the instruction that ended the run completed earlier


# --- the protocol session: packets in, replies out --------------------------------------------


class Target(Protocol):
    """What the session needs of a thread (GuestControl; a fake in the unit tests)."""

    tid: int
    name: str
    event: StopEvent | None
    stop: StopReason | None

    @property
    def alive(self) -> bool: ...
    def architecture(self) -> str: ...
    def register_values(self) -> dict[str, int]: ...
    def write_register(self, source: str, value: int) -> None: ...
    def read_memory(self, addr: int, length: int) -> bytes: ...
    def write_memory(self, addr: int, data: bytes) -> None: ...
    def insert(self, kind: int, addr: int, length: int) -> bool: ...
    def remove(self, kind: int, addr: int, length: int) -> bool: ...
    def can_step(self) -> bool: ...


@dataclass(frozen=True)
class Resume:
    actions: dict[int, str]  # thread id → "c" or "s"; threads not named stay stopped


class Detach:
    pass


@dataclass(frozen=True)
class Kill:
    reply: bytes | None = None  # vKill is answered (OK), k is not


Reply = bytes | Resume | Detach | Kill


class GdbSession:
    """The commands of one gdb connection, answered from a list of threads (transport-free)."""

    def __init__(self, targets: Sequence[Target]) -> None:
        self.targets = list(targets)
        self.features: set[str] = set()
        self.no_ack = False
        self.layout: Layout | None = None
        live = [t.tid for t in self.targets if t.alive]
        self.g_thread = self.c_thread = live[0] if live else (self.targets[0].tid if self.targets else 1)

    def handle(self, payload: bytes) -> Reply:
        """One packet's reply. Never raises: malformed packets and failures are E replies."""
        try:
            return self._dispatch(payload)
        except (PacketError, TargetError) as err:
            return b"E%02x" % (err.code & 0xFF)
        except MinikvmError:
            return b"E%02x" % EPERM

    def _target(self, tid: int) -> Target:
        for target in self.targets:
            if target.tid == tid:
                return target
        live = [t for t in self.targets if t.alive]
        if tid in (0, -1) and live:
            return live[0]
        raise PacketError(EINVAL, f"no thread {tid}")

    def _layout(self) -> Layout:
        if self.layout is None:
            self.layout = choose_layout([t.architecture() for t in self.targets if t.alive] or ["i386"])
        return self.layout

    def stop_reply(self) -> bytes:
        """What '?' answers: why the current thread is stopped, or how the guests ended."""
        if not any(t.alive for t in self.targets):
            return exit_reply([t.stop for t in self.targets if t.stop is not None])
        target = self._target(self.g_thread)
        if not target.alive:
            target = self._target(0)
        return stop_reply(target.event or StopEvent(SIGTRAP), target.tid, self.features)

    def _dispatch(self, payload: bytes) -> Reply:
        if not payload:
            return b""
        command, args = chr(payload[0]), payload[1:]
        simple = {"?": self.stop_reply, "g": self._read_registers}
        if command in simple and not args:
            return simple[command]()
        handler = _HANDLERS.get(command)
        if handler is not None:
            return handler(self, args)
        return b""  # not supported: the empty reply

    # --- one method per command letter --------------------------------------------------

    def _read_registers(self) -> bytes:
        return self._layout().encode(self._target(self.g_thread).register_values())

    def _write_registers(self, args: bytes) -> bytes:
        layout = self._layout()
        if len(args) != sum(r.bits for r in layout.regs) // 4:
            raise PacketError(EINVAL, "G: the register block has the wrong length")
        target = self._target(self.g_thread)
        current = target.register_values()
        offset = 0
        for reg in layout.regs:
            text = args[offset:offset + reg.bits // 4]
            offset += len(text)
            if reg.source is None or reg.source not in current or text == b"x" * len(text):
                continue  # unavailable, or sent as such: left alone
            value = int.from_bytes(parse_hex_bytes(text), "little")
            mask = (1 << reg.bits) - 1
            if value != current[reg.source] & mask:
                if not reg.writable:
                    raise TargetError(EPERM, f"{reg.name} cannot be written")
                target.write_register(reg.source, (current[reg.source] & ~mask) | value)
        return b"OK"

    def _register(self, number: int) -> Reg:
        regs = self._layout().regs
        if number >= len(regs):
            raise PacketError(EINVAL, f"no register {number}")
        return regs[number]

    def _read_register(self, args: bytes) -> bytes:
        reg = self._register(parse_hex(args, "register", 1 << 16))
        return Layout.encode_one(reg, self._target(self.g_thread).register_values())

    def _write_register(self, args: bytes) -> bytes:
        number, data = parse_register_write(args)
        reg = self._register(number)
        if len(data) != reg.bits // 8:
            raise PacketError(EINVAL, f"{reg.name} is {reg.bits // 8} bytes, not {len(data)}")
        if not reg.writable or reg.source is None:
            raise TargetError(EPERM, f"{reg.name} cannot be written")
        target = self._target(self.g_thread)
        old = target.register_values()[reg.source]
        mask = (1 << reg.bits) - 1
        target.write_register(reg.source, (old & ~mask) | int.from_bytes(data, "little"))
        return b"OK"

    def _read_memory(self, args: bytes) -> bytes:
        addr, length = parse_memory_read(args)
        length = min(length, (PACKET_SIZE - 4) // 2)
        if length == 0:
            return b""
        data = self._target(self.g_thread).read_memory(addr, length)
        if not data:
            raise TargetError(EFAULT, f"nothing readable at {addr:#x}")
        return data.hex().encode()

    def _write_memory(self, args: bytes) -> bytes:
        addr, data = parse_memory_write(args)
        if data:
            self._target(self.g_thread).write_memory(addr, data)
        return b"OK"

    def _write_binary(self, args: bytes) -> bytes:
        addr, data = parse_binary_write(args)
        if data:
            self._target(self.g_thread).write_memory(addr, data)
        return b"OK"

    def _breakpoint(self, args: bytes, insert: bool) -> bytes:
        kind, addr, length = parse_breakpoint(args)
        targets = [t for t in self.targets if t.alive]  # one 'process': every guest gets it
        if not targets:
            raise TargetError(EPERM, "no guest is running")
        done: list[Target] = []
        try:
            for target in targets:
                ok = target.insert(kind, addr, length) if insert else target.remove(kind, addr, length)
                if not ok:
                    for other in done:
                        other.remove(kind, addr, length)
                    return b""  # this accelerator has no such breakpoint or watchpoint
                done.append(target)
        except TargetError:
            if insert:
                for other in done:
                    other.remove(kind, addr, length)
            raise
        return b"OK"

    def _insert(self, args: bytes) -> bytes:
        return self._breakpoint(args, True)

    def _remove(self, args: bytes) -> bytes:
        return self._breakpoint(args, False)

    def _select_thread(self, args: bytes) -> bytes:
        if not args or chr(args[0]) not in "gc":
            raise PacketError(EINVAL, "H needs g or c")
        tid = parse_thread_id(args[1:])
        if tid > 0:
            self._target(tid)  # must exist
        if args[:1] == b"g":
            self.g_thread = tid if tid > 0 else self._target(0).tid
        else:
            self.c_thread = tid
        return b"OK"

    def _thread_alive(self, args: bytes) -> bytes:
        tid = parse_thread_id(args)
        return b"OK" if any(t.tid == tid and t.alive for t in self.targets) else b"E01"

    def _resume_with(self, args: bytes, step: bool) -> Reply:
        if args:  # 'c addr' / 's addr': resume at addr
            addr = parse_hex(args.split(b";")[-1], "address")
            self._target(self.c_thread if self.c_thread > 0 else self.g_thread).write_register("rip", addr)
        stepper = self.c_thread if self.c_thread > 0 else self.g_thread
        actions = {t.tid: "c" for t in self.targets if t.alive}
        if step:
            target = self._target(stepper)
            if not target.can_step():
                raise TargetError(EPERM, "this host's KVM cannot single-step here (CPL3)")
            actions[target.tid] = "s"
        return Resume(actions)

    def _continue(self, args: bytes) -> Reply:
        return self._resume_with(args, False)

    def _step(self, args: bytes) -> Reply:
        return self._resume_with(args, True)

    def _continue_signal(self, args: bytes) -> Reply:
        parse_hex(args.split(b";")[0], "signal", 256)  # C sig[;addr]: no signals for a guest
        return self._resume_with(args.split(b";", 1)[1] if b";" in args else b"", False)

    def _step_signal(self, args: bytes) -> Reply:
        parse_hex(args.split(b";")[0], "signal", 256)
        return self._resume_with(args.split(b";", 1)[1] if b";" in args else b"", True)

    def _detach(self, args: bytes) -> Reply:
        return Detach()

    def _kill(self, args: bytes) -> Reply:
        return Kill()

    def _v(self, args: bytes) -> Reply:
        if args == b"Cont?":
            return b"vCont;c;C;s;S"
        if args.startswith(b"Cont;"):
            return self._vcont(parse_vcont(args[4:]))
        if args.startswith(b"Kill"):
            return Kill(b"OK")
        return b""  # vMustReplyEmpty, vFile, vRun, …: not supported

    def _vcont(self, actions: list[tuple[str, int]]) -> Reply:
        chosen: dict[int, str] = {}
        for verb, tid in actions:  # the leftmost action that names a thread wins
            if tid > 0:
                self._target(tid)
            for target in self.targets:
                if target.alive and target.tid not in chosen and (tid in (-1, 0) or tid == target.tid):
                    if verb == "s" and not target.can_step():
                        raise TargetError(EPERM, "this host's KVM cannot single-step here (CPL3)")
                    chosen[target.tid] = verb
        return Resume({tid: verb for tid, verb in chosen.items() if verb in "cs"})

    def _query(self, args: bytes) -> bytes:
        name, _, rest = args.partition(b":")
        if name == b"Supported":
            self.features = parse_features(rest)
            return (b"PacketSize=%x;qXfer:features:read+;swbreak+;hwbreak+;vContSupported+;"
                    b"QStartNoAckMode+" % PACKET_SIZE)
        if name == b"Xfer":
            return self._xfer(rest)
        if args == b"C":
            return b"QC%x" % self.g_thread
        if args == b"fThreadInfo":
            live = [t.tid for t in self.targets if t.alive]
            return (b"m" + b",".join(b"%x" % tid for tid in live)) if live else b"l"
        if args == b"sThreadInfo":
            return b"l"
        if args == b"Attached" or args.startswith(b"Attached:"):
            return b"1"  # the guests exist without gdb: quitting gdb detaches, it does not kill
        if args.startswith(b"ThreadExtraInfo,"):
            target = self._target(parse_thread_id(args[len(b"ThreadExtraInfo,"):]))
            state = getattr(target, "state", None)
            words = state.value if state is not None else "alive" if target.alive else "ended"
            return f"{target.name}, {words}".encode().hex().encode()
        if args == b"Symbol::":
            return b"OK"
        return b""

    def _xfer(self, args: bytes) -> bytes:
        obj, annex, offset, length = parse_xfer_read(args)
        if obj != "features":
            return b""
        if annex != "target.xml":
            raise PacketError(0, f"no feature document {annex!r}")
        document = self._layout().target_xml()
        chunk = document[offset:offset + min(length, PACKET_SIZE // 2)]
        return (b"l" if offset + len(chunk) >= len(document) else b"m") + escape(chunk)

    def _set(self, args: bytes) -> bytes:
        if args == b"StartNoAckMode":
            self.no_ack = True
            return b"OK"
        return b""


_HANDLERS: dict[str, Callable[[GdbSession, bytes], Reply]] = {
    "G": GdbSession._write_registers, "p": GdbSession._read_register, "P": GdbSession._write_register,
    "m": GdbSession._read_memory, "M": GdbSession._write_memory, "X": GdbSession._write_binary,
    "Z": GdbSession._insert, "z": GdbSession._remove, "H": GdbSession._select_thread,
    "T": GdbSession._thread_alive, "c": GdbSession._continue, "s": GdbSession._step,
    "C": GdbSession._continue_signal, "S": GdbSession._step_signal, "D": GdbSession._detach,
    "k": GdbSession._kill, "v": GdbSession._v, "q": GdbSession._query, "Q": GdbSession._set,
}


# --- the server: a socket, one gdb at a time ----------------------------------------------------


class GdbStubError(MinikvmError):
    """The stub cannot listen where --gdb says."""


_PAUSE_WAIT = 5.0  # seconds to wait for a vCPU to reach its pause point
_SEND_TIMEOUT = 10.0  # a gdb that stops reading is treated as gone


class GdbServer:
    """Listens on (host, port) and serves one gdb connection at a time, in its own thread."""

    def __init__(self, controls: Sequence[GuestControl], host: str = "127.0.0.1", port: int = 0) -> None:
        self.controls = list(controls)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            infos.sort(key=lambda info: info[0] != socket.AF_INET)  # 'localhost': where gdb tries first
            family, _, _, _, address = infos[0]
            self._listener = socket.create_server(address[:2], family=family)
        except (OSError, UnicodeError) as err:
            raise GdbStubError(f"--gdb {host}:{port}: cannot listen there: {getattr(err, 'strerror', None) or err}")\
                from None
        bound = self._listener.getsockname()
        self.host, self.port = bound[0], bound[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._closing = False
        self._thread: threading.Thread | None = None
        for control in self.controls:
            control.attach(self.wake)

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="gdb-stub", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        try:
            self._wake_w.send(b"!")
        except OSError:
            pass  # the pipe is full (a wake-up is pending anyway) or closed

    def close(self, grace: float = 3.0) -> None:
        """Stop serving: a waiting gdb gets its final reply first, then the connection closes."""
        self._closing = True
        self.wake()
        if self._thread is not None:
            self._thread.join(grace)
        for control in self.controls:
            control.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _serve(self) -> None:
        while not self._closing:
            try:
                ready, _, _ = select.select([self._listener, self._wake_r], [], [])
            except (OSError, ValueError):
                return
            if self._wake_r in ready:
                self._drain_wake()
            if self._listener in ready and not self._closing:
                try:
                    conn, _ = self._listener.accept()
                except OSError:
                    continue
                try:
                    _Connection(self, conn).serve()
                except Exception:  # the client went away mid-reply, or we are closing
                    pass  # either way the connection is over; the guests were left running
                finally:
                    conn.close()


class _Connection:
    def __init__(self, server: GdbServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        sock.settimeout(_SEND_TIMEOUT)
        self.controls = server.controls
        self.session = GdbSession(self.controls)
        self.reader = PacketReader()
        self.last = b""
        self.running: set[int] = set()  # threads resumed, their stop not yet reported
        self.reported_end: set[int] = set()  # guests whose end gdb was told of (an 'O' line)

    def send(self, payload: bytes) -> None:
        self.last = frame(payload)
        self.sock.sendall(self.last)

    def serve(self) -> None:
        for control in self.controls:
            control.attached = True
        self._pause_all(SIGTRAP)  # gdb expects a stopped target when it attaches
        try:
            while True:
                ready, _, _ = select.select([self.sock, self.server._wake_r], [], [])
                if self.server._wake_r in ready:
                    self.server._drain_wake()
                    if self.running:
                        self._check_stops()
                    if self.server._closing:
                        return
                if self.sock in ready:
                    data = self.sock.recv(65536)
                    if not data:
                        return
                    for event in self.reader.feed(data):
                        self._on(event)
        except _Closed:
            return
        finally:
            self._leave()

    def _on(self, event: StreamEvent) -> None:
        if isinstance(event, Nak):
            if self.last and not self.session.no_ack:
                self.sock.sendall(self.last)
        elif isinstance(event, Garbled):
            if not self.session.no_ack:
                self.sock.sendall(b"-")
        elif isinstance(event, Interrupt):
            if self.running:
                self._interrupt()
        elif isinstance(event, Packet):
            if not self.session.no_ack:
                self.sock.sendall(b"+")
            if self.running:
                return  # gdb waits for a stop reply now; anything else is noise
            try:
                reply = self.session.handle(event.payload)
            except Exception:  # a bug must not take the stub (and gdb's view of the guests) down
                reply = b"E%02x" % EPERM
            if isinstance(reply, bytes):
                self.send(reply)
            elif isinstance(reply, Resume):
                self._resume(reply)
            elif isinstance(reply, Detach):
                self.send(b"OK")
                raise _Closed
            else:
                self._kill()
                if reply.reply is not None:
                    self.send(reply.reply)
                raise _Closed

    def _pause_all(self, signal: int) -> None:
        for control in self.controls:
            control.request_pause(signal)
        for control in self.controls:
            control.wait_paused(_PAUSE_WAIT)

    def _resume(self, resume: Resume) -> None:
        targets = [c for c in self.controls if c.tid in resume.actions and c.alive]
        if not targets:
            self._report_end()
            return
        pending = [c for c in targets if c.state is State.PAUSED and c.event and c.event.own and not c.reported]
        if pending:  # a guest stopped on its own while gdb looked at another: that stop comes first
            self._report(min(pending, key=lambda c: c.sequence))
            return
        self.running = {c.tid for c in targets}
        for control in targets:
            control.resume(step=resume.actions[control.tid] == "s")
        self._check_stops()

    def _interrupt(self) -> None:
        self._pause_all(SIGINT)
        self._check_stops()

    def _check_stops(self) -> None:
        """While gdb waits: report the first resumed guest that stopped, or the end of them all."""
        resumed = [c for c in self.controls if c.tid in self.running]
        for control in resumed:
            if control.state is State.FINISHED and control.tid not in self.reported_end and control.stop:
                self.reported_end.add(control.tid)
                self.send(console_output(f"minikvm: {control.name}: {control.stop.message}\n"))
        stopped = [c for c in resumed if c.state is State.PAUSED]
        if stopped:
            self._pause_all(SIGINT)  # all-stop: the others stop too
            self.running.clear()
            self._report(min(stopped, key=lambda c: c.sequence))
            return
        if all(c.state is State.FINISHED for c in resumed):
            self.running.clear()
            live = [c for c in self.controls if c.alive]
            if not live:
                self._report_end()
            else:  # the guests gdb let run have ended; the others are still stopped
                self.session.g_thread = self.session.c_thread = live[0].tid
                self.send(stop_reply(StopEvent(SIGTRAP), live[0].tid, self.session.features))

    def _report(self, control: GuestControl) -> None:
        control.reported = True
        self.session.g_thread = self.session.c_thread = control.tid
        self.send(stop_reply(control.event or StopEvent(SIGTRAP), control.tid, self.session.features))

    def _report_end(self) -> None:
        self.send(exit_reply([c.stop for c in self.controls if c.stop is not None]))

    def _kill(self) -> None:
        for control in self.controls:
            control.machine.request_stop(StopReason(StopKind.INTERRUPTED, "killed from gdb (k)"))

    def _leave(self) -> None:
        """gdb detached or went away: the guests go on, without breakpoints or steps."""
        for control in self.controls:
            control.clear_debugging()
            control.resume()


class _Closed(Exception):
    """The connection ends here (detach or kill)."""
