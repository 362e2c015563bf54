"""File-descriptor wrappers: `Kvm` (/dev/kvm) → `Vm` → `Vcpu`, each made by its parent.

Every ioctl goes through `_ioctl`, which raises `KvmError` naming the ioctl
and errno. KVM_RUN is called through libc's ioctl with ctypes: ctypes releases
the GIL for the call, and an EINTR comes back as -1 on every CPython version
(the `fcntl` module retries or raises depending on the version).
"""

from __future__ import annotations

import ctypes
import errno
import grp
import mmap
import os
import stat
import struct
import weakref
from collections.abc import Sequence
from ctypes import byref, c_uint64, sizeof
from typing import ClassVar

from ..errors import MinikvmError
from . import uapi
from .exits import (
    DebugExit,
    Exit,
    FailEntryExit,
    HltExit,
    InternalErrorExit,
    InterruptedExit,
    IoExit,
    MmioExit,
    ShutdownExit,
    SystemEventExit,
    UnsupportedExit,
)

KVM_DEVICE = "/dev/kvm"

# The x86 debug registers as KVM_SET_GUEST_DEBUG takes them (SDM vol. 3B §18.2).
DEBUG_SLOTS = 4  # DR0-DR3
DR_EXECUTE, DR_WRITE, DR_ACCESS = 0b00, 0b01, 0b11  # DR7 R/W field: instruction, data write, data read/write
_DR7_LENGTH = {1: 0b00, 2: 0b01, 8: 0b10, 4: 0b11}  # DR7 LEN field
DR6_BS = 1 << 14  # DR6: the debug exception is a single step

_libc = ctypes.CDLL(None, use_errno=True)
_libc_ioctl = _libc.ioctl
_libc_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_libc_ioctl.restype = ctypes.c_int

_EXIT_REASON = struct.Struct(uapi.EXIT_REASON_FORMAT)
_IO_EXIT = struct.Struct(uapi.IO_EXIT_FORMAT)
_RING_HEAD = struct.Struct(uapi.RING_HEAD_FORMAT)
_RING_ENTRY = struct.Struct(uapi.COALESCED_ENTRY_FORMAT)
_EXIT_REASON_AT = uapi.kvm_run.exit_reason.offset
_EXIT_UNION_AT = uapi.kvm_run.u.offset
_SYNC_REGS_AT = uapi.kvm_run.s.offset + uapi.kvm_sync_regs.regs.offset
_U64 = struct.Struct("<Q")

_IOCTL_NAMES = {value: name for name, value in vars(uapi).items()
                if name.startswith("KVM_") and name.isupper() and isinstance(value, int)
                and value > 0xFFFF}


class KvmError(MinikvmError):
    """An ioctl on a KVM file descriptor failed."""

    def __init__(self, request: int, err: int, what: str = "") -> None:
        self.request = request
        self.errno = err
        self.ioctl = _IOCTL_NAMES.get(request, f"ioctl {request:#x}")
        detail = f" ({what})" if what else ""
        super().__init__(f"{self.ioctl} failed: {os.strerror(err)}{detail}")


class KvmUnavailableError(MinikvmError):
    """/dev/kvm is missing or cannot be opened; the message says what to do."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(reason)


def _ioctl(fd: int, request: int, arg: object = None) -> int:
    ret = _libc_ioctl(fd, request, arg)
    if ret < 0:
        raise KvmError(request, ctypes.get_errno())
    return ret


def _explain_open_failure(path: str, err: OSError) -> KvmUnavailableError:
    if err.errno == errno.ENOENT:
        return KvmUnavailableError(path, f"{path} does not exist: this host has no KVM (load the kvm module "
                                   "and enable virtualization in the firmware)")
    if err.errno in (errno.EACCES, errno.EPERM):
        st = os.stat(path)
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        mode = stat.filemode(st.st_mode)
        group_rw = stat.S_IRGRP | stat.S_IWGRP
        if st.st_mode & group_rw == group_rw:
            advice = f"add yourself to group '{group}' and log in again"
        else:
            advice = (f"only its owner may open it and the group '{group}' may not: run as the owner, or "
                      f"let a group you are in read and write it (e.g. chgrp kvm {path}; chmod 660 {path})")
        return KvmUnavailableError(path, f"{path} is not accessible to this user ({mode}, group '{group}'): "
                                   f"{advice}")
    return KvmUnavailableError(path, f"cannot open {path}: {err.strerror}")


class Kvm:
    """The KVM subsystem (/dev/kvm): capability checks and VM creation."""

    name = "kvm"

    def __init__(self, path: str = KVM_DEVICE) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as err:
            raise _explain_open_failure(path, err) from None
        self._finalizer = weakref.finalize(self, os.close, self.fd)
        try:
            version = _ioctl(self.fd, uapi.KVM_GET_API_VERSION)
        except KvmError as err:
            self.close()
            raise KvmUnavailableError(path, f"{path} is not a KVM device (KVM_GET_API_VERSION: "
                                      f"{os.strerror(err.errno)})") from None
        if version != uapi.KVM_API_VERSION:
            self.close()
            raise KvmUnavailableError(path, f"{path} speaks KVM API {version}, minikvm needs "
                                      f"{uapi.KVM_API_VERSION}")
        self.vcpu_mmap_size = _ioctl(self.fd, uapi.KVM_GET_VCPU_MMAP_SIZE)
        self._cpuid: list[uapi.kvm_cpuid_entry2] | None = None

    def check_extension(self, cap: int) -> int:
        return _ioctl(self.fd, uapi.KVM_CHECK_EXTENSION, cap)

    def supported_cpuid(self, max_entries: int = 256) -> list[uapi.kvm_cpuid_entry2]:
        """What CPUID KVM can offer a guest (asked once per handle: the answer never changes)."""
        if self._cpuid is None:
            cpuid = uapi.kvm_cpuid2_with(max_entries)()
            cpuid.nent = max_entries
            _ioctl(self.fd, uapi.KVM_GET_SUPPORTED_CPUID, byref(cpuid))
            self._cpuid = [cpuid.entries[i] for i in range(cpuid.nent)]
        return self._cpuid

    def create_vm(self) -> Vm:
        return Vm(self, _ioctl(self.fd, uapi.KVM_CREATE_VM, 0))

    def close(self) -> None:
        self._finalizer()


class Vm:
    """One virtual machine: memory slots, in-kernel devices, vCPUs."""

    def __init__(self, kvm: Kvm, fd: int) -> None:
        self.kvm = kvm
        self.fd = fd
        self._finalizer = weakref.finalize(self, os.close, fd)

    def check_extension(self, cap: int) -> int:
        return _ioctl(self.fd, uapi.KVM_CHECK_EXTENSION, cap)

    def set_user_memory_region(self, slot: int, guest_phys_addr: int, size: int, host_addr: int,
                               flags: int = 0) -> None:
        region = uapi.kvm_userspace_memory_region(slot, flags, guest_phys_addr, size, host_addr)
        _ioctl(self.fd, uapi.KVM_SET_USER_MEMORY_REGION, byref(region))

    def set_tss_addr(self, addr: int) -> None:
        _ioctl(self.fd, uapi.KVM_SET_TSS_ADDR, addr)

    def set_identity_map_addr(self, addr: int) -> None:
        _ioctl(self.fd, uapi.KVM_SET_IDENTITY_MAP_ADDR, byref(c_uint64(addr)))

    def create_irqchip(self) -> None:
        _ioctl(self.fd, uapi.KVM_CREATE_IRQCHIP)

    def create_pit2(self, flags: int = 0) -> None:
        config = uapi.kvm_pit_config(flags)
        _ioctl(self.fd, uapi.KVM_CREATE_PIT2, byref(config))

    def irq_line(self, irq: int, level: bool) -> None:
        line = uapi.kvm_irq_level(irq, int(level))
        _ioctl(self.fd, uapi.KVM_IRQ_LINE, byref(line))

    def coalesced_pio_supported(self) -> bool:
        return bool(self.check_extension(uapi.KVM_CAP_COALESCED_PIO))

    def register_coalesced_pio(self, port: int, size: int) -> None:
        zone = uapi.kvm_coalesced_mmio_zone(port, size, 1)
        _ioctl(self.fd, uapi.KVM_REGISTER_COALESCED_MMIO, byref(zone))

    def unregister_coalesced_pio(self, port: int, size: int) -> None:
        zone = uapi.kvm_coalesced_mmio_zone(port, size, 1)
        _ioctl(self.fd, uapi.KVM_UNREGISTER_COALESCED_MMIO, byref(zone))

    def enable_cap(self, cap: int, *args: int) -> None:
        enable = uapi.kvm_enable_cap(cap, 0, (c_uint64 * 4)(*args))
        _ioctl(self.fd, uapi.KVM_ENABLE_CAP, byref(enable))

    def create_vcpu(self, vcpu_id: int = 0) -> Vcpu:
        return Vcpu(self, _ioctl(self.fd, uapi.KVM_CREATE_VCPU, vcpu_id))

    def close(self) -> None:
        self._finalizer()


class _SyncedRegs:
    """kvm_regs fields read straight from the synced copy in kvm_run, one unpack per field asked."""

    __slots__ = ("_mapping",)
    _OFFSETS: ClassVar[dict[str, int]] = {name: _SYNC_REGS_AT + getattr(uapi.kvm_regs, name).offset
                                          for name, _ in uapi.kvm_regs._fields_}

    def __init__(self, mapping: mmap.mmap) -> None:
        self._mapping = mapping

    def __getattr__(self, name: str) -> int:
        try:
            return _U64.unpack_from(self._mapping, self._OFFSETS[name])[0]
        except KeyError:
            raise AttributeError(name) from None


def _close_vcpu(fd: int, mapping: mmap.mmap, holder: list) -> None:
    holder.clear()  # drop the ctypes views before the mmap they point into
    mapping.close()
    os.close(fd)


class Vcpu:
    """One virtual CPU: registers, the shared kvm_run page, and KVM_RUN itself."""

    def __init__(self, vm: Vm, fd: int) -> None:
        self.vm = vm
        self.fd = fd
        self._mapping = mmap.mmap(fd, vm.kvm.vcpu_mmap_size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        self.run_struct = uapi.kvm_run.from_buffer(self._mapping)
        # The coalesced-I/O ring lives in the same mapping, at the page the
        # capability check names (0 means the kernel has no coalescing).
        ring_page = vm.kvm.check_extension(uapi.KVM_CAP_COALESCED_MMIO)
        self._ring = (uapi.kvm_coalesced_mmio_ring.from_buffer(self._mapping, ring_page * uapi.PAGE_SIZE)
                      if ring_page else None)
        self._ring_offset = ring_page * uapi.PAGE_SIZE + sizeof(uapi.kvm_coalesced_mmio_ring)
        self._ring_max = (uapi.PAGE_SIZE - sizeof(uapi.kvm_coalesced_mmio_ring)) // sizeof(uapi.kvm_coalesced_mmio)
        self._views = [self.run_struct, self._ring]
        self._finalizer = weakref.finalize(self, _close_vcpu, fd, self._mapping, self._views)
        self._finalizer.atexit = False  # at interpreter exit the views may still be alive; the OS cleans up
        self.sync_regs = bool(vm.kvm.check_extension(uapi.KVM_CAP_SYNC_REGS) & uapi.KVM_SYNC_X86_REGS)
        if self.sync_regs:
            # The kernel then copies the GPRs into kvm_run at every exit: a
            # hypercall reads BL without a KVM_GET_REGS round trip.
            self.run_struct.kvm_valid_regs = uapi.KVM_SYNC_X86_REGS
            self._synced = _SyncedRegs(self._mapping)

    # --- state ---------------------------------------------------------------

    def get_regs(self) -> uapi.kvm_regs:
        regs = uapi.kvm_regs()
        _ioctl(self.fd, uapi.KVM_GET_REGS, byref(regs))
        return regs

    def set_regs(self, regs: uapi.kvm_regs) -> None:
        _ioctl(self.fd, uapi.KVM_SET_REGS, byref(regs))

    def exit_regs(self) -> uapi.kvm_regs | _SyncedRegs:
        """The GPRs as of the last exit (regs.rbx): read from kvm_run when synced, else an ioctl."""
        if self.sync_regs:
            return self._synced
        return self.get_regs()

    def get_sregs(self) -> uapi.kvm_sregs:
        sregs = uapi.kvm_sregs()
        _ioctl(self.fd, uapi.KVM_GET_SREGS, byref(sregs))
        return sregs

    def set_sregs(self, sregs: uapi.kvm_sregs) -> None:
        _ioctl(self.fd, uapi.KVM_SET_SREGS, byref(sregs))

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        msrs = uapi.kvm_msrs_with(len(indices))()
        msrs.nmsrs = len(indices)
        for entry, index in zip(msrs.entries, indices, strict=True):
            entry.index = index
        done = _ioctl(self.fd, uapi.KVM_GET_MSRS, byref(msrs))
        return {msrs.entries[i].index: msrs.entries[i].data for i in range(done)}

    def set_msrs(self, values: dict[int, int]) -> None:
        msrs = uapi.kvm_msrs_with(len(values))()
        msrs.nmsrs = len(values)
        for entry, (index, data) in zip(msrs.entries, values.items(), strict=True):
            entry.index, entry.data = index, data
        done = _ioctl(self.fd, uapi.KVM_SET_MSRS, byref(msrs))
        if done != len(values):
            bad = msrs.entries[done].index
            raise KvmError(uapi.KVM_SET_MSRS, errno.EINVAL, f"MSR {bad:#x} refused")

    def set_cpuid2(self, entries: list[uapi.kvm_cpuid_entry2]) -> None:
        cpuid = uapi.kvm_cpuid2_with(len(entries))()
        cpuid.nent = len(entries)
        for i, entry in enumerate(entries):
            cpuid.entries[i] = entry
        _ioctl(self.fd, uapi.KVM_SET_CPUID2, byref(cpuid))

    def get_vcpu_events(self) -> uapi.kvm_vcpu_events:
        events = uapi.kvm_vcpu_events()
        _ioctl(self.fd, uapi.KVM_GET_VCPU_EVENTS, byref(events))
        return events

    def get_mp_state(self) -> int:
        state = uapi.kvm_mp_state()
        _ioctl(self.fd, uapi.KVM_GET_MP_STATE, byref(state))
        return state.mp_state

    def set_guest_debug(self, control: int, debugreg: list[int] | None = None) -> None:
        dbg = uapi.kvm_guest_debug(control)
        for i, value in enumerate(debugreg or []):
            dbg.arch.debugreg[i] = value
        _ioctl(self.fd, uapi.KVM_SET_GUEST_DEBUG, byref(dbg))

    # --- debugging -------------------------------------------------------------

    def set_mp_state(self, state: int) -> None:
        mp = uapi.kvm_mp_state(state)
        _ioctl(self.fd, uapi.KVM_SET_MP_STATE, byref(mp))

    def set_debug(self, single_step: bool = False, slots: Sequence[tuple[int, int, int]] = ()) -> None:
        """Single-step (one KVM_EXIT_DEBUG per instruction) and the debug registers DR0-DR3.

        `slots` holds up to four (linear address, kind, length): kind DR_EXECUTE
        (length 1), DR_WRITE or DR_ACCESS (length 1, 2, 4 or 8, naturally
        aligned). A hit is a KVM_EXIT_DEBUG whose DR6 has bit N set for slot N;
        a completed single step sets DR6.BS. Nothing set turns guest debugging off.
        """
        if len(slots) > DEBUG_SLOTS:
            raise ValueError(f"{len(slots)} breakpoints/watchpoints: the CPU has {DEBUG_SLOTS} debug registers")
        debugreg = [0] * 8
        dr7 = 0
        for n, (addr, kind, length) in enumerate(slots):
            if kind not in (DR_EXECUTE, DR_WRITE, DR_ACCESS) or length not in _DR7_LENGTH or addr % length:
                raise ValueError(f"debug register {n}: kind {kind} length {length} at {addr:#x} is not encodable")
            if kind == DR_EXECUTE and length != 1:
                raise ValueError(f"debug register {n}: an instruction breakpoint has length 1")
            debugreg[n] = addr
            dr7 |= (1 << (2 * n)) | (kind << (16 + 4 * n)) | (_DR7_LENGTH[length] << (18 + 4 * n))
        debugreg[7] = dr7
        control = 0
        if slots:
            control |= uapi.KVM_GUESTDBG_ENABLE | uapi.KVM_GUESTDBG_USE_HW_BP
        if single_step:
            control |= uapi.KVM_GUESTDBG_ENABLE | uapi.KVM_GUESTDBG_SINGLESTEP
        self.set_guest_debug(control, debugreg)

    def cancel_exit_request(self) -> None:
        """Undo request_exit: immediate_exit stays set until userspace clears it, and a
        paused vCPU (the debugger) goes on running afterwards."""
        self.run_struct.immediate_exit = 0

    # --- running ---------------------------------------------------------------

    def request_exit(self) -> None:
        """Make the current or next KVM_RUN return; the caller also signals the thread."""
        self.run_struct.immediate_exit = 1

    def run(self) -> Exit:
        run = self.run_struct
        if _libc_ioctl(self.fd, uapi.KVM_RUN, None) < 0:
            err = ctypes.get_errno()
            if err in (errno.EINTR, errno.EAGAIN):
                return InterruptedExit()
            raise KvmError(uapi.KVM_RUN, err)
        mapping = self._mapping
        reason = _EXIT_REASON.unpack_from(mapping, _EXIT_REASON_AT)[0]
        if reason == uapi.KVM_EXIT_IO:  # the hot path: unpack the bytes, no ctypes objects
            direction, size, port, count, offset = _IO_EXIT.unpack_from(mapping, _EXIT_UNION_AT)
            if direction == uapi.KVM_EXIT_IO_OUT:
                return IoExit(port, size, count, True, mapping[offset:offset + size * count], offset)
            return IoExit(port, size, count, False, b"", offset)
        if reason == uapi.KVM_EXIT_HLT:
            return HltExit()
        if reason == uapi.KVM_EXIT_MMIO:
            mmio = run.u.mmio
            return MmioExit(mmio.phys_addr, mmio.len, bool(mmio.is_write), bytes(mmio.data)[:mmio.len])
        if reason == uapi.KVM_EXIT_SHUTDOWN:
            return ShutdownExit()
        if reason == uapi.KVM_EXIT_INTR:
            return InterruptedExit()
        if reason == uapi.KVM_EXIT_INTERNAL_ERROR:
            return self._internal_error()
        if reason == uapi.KVM_EXIT_FAIL_ENTRY:
            fail = run.u.fail_entry
            return FailEntryExit(fail.hardware_entry_failure_reason, fail.cpu)
        if reason == uapi.KVM_EXIT_SYSTEM_EVENT:
            event = run.u.system_event
            return SystemEventExit(event.type, tuple(event.data[:min(event.ndata, 16)]))
        if reason == uapi.KVM_EXIT_DEBUG:
            dbg = run.u.debug.arch
            return DebugExit(dbg.exception, dbg.pc, dbg.dr6, dbg.dr7)
        return UnsupportedExit(reason, uapi.KVM_EXIT_NAMES.get(reason, f"exit {reason}"))

    def _internal_error(self) -> InternalErrorExit:
        internal = self.run_struct.u.internal
        ndata = min(internal.ndata, 16)
        insn = None
        if internal.suberror == uapi.KVM_INTERNAL_ERROR_EMULATION:
            failure = self.run_struct.u.emulation_failure
            if ndata >= 1 and failure.flags & uapi.KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES:
                insn = bytes(failure.insn_bytes)[:min(failure.insn_size, 15)]
        return InternalErrorExit(internal.suberror, tuple(internal.data[:ndata]), insn)

    def complete_io_in(self, exit: IoExit, data: bytes) -> None:
        """Hand the bytes an IN reads back to KVM; they reach the guest on the next run."""
        self._mapping[exit.data_offset:exit.data_offset + len(data)] = data

    def complete_mmio_read(self, data: bytes) -> None:
        """Hand the bytes an MMIO read returns to KVM; they reach the guest on the next run."""
        ctypes.memmove(ctypes.addressof(self.run_struct.u.mmio.data), data, min(len(data), 8))

    def drain_coalesced(self) -> list[tuple[int, bool, bytes]]:
        """Take the writes KVM buffered in the coalesced ring, oldest first:
        (address or port, is_pio, data)."""
        ring = self._ring
        if ring is None:
            return []
        head = self._ring_offset - sizeof(uapi.kvm_coalesced_mmio_ring)
        first, last = _RING_HEAD.unpack_from(self._mapping, head)
        if first == last:
            return []
        entries = []
        mapping, size, limit = self._mapping, _RING_ENTRY.size, self._ring_max
        while first != last:
            addr, length, pio, data = _RING_ENTRY.unpack_from(mapping, self._ring_offset + first * size)
            entries.append((addr, bool(pio), data[:length]))
            first = (first + 1) % limit
        ring.first = first  # hand the slots back to KVM only after reading them
        return entries

    def close(self) -> None:
        self.run_struct = self._ring = None  # type: ignore[assignment]
        self._finalizer()
