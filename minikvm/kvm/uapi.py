"""Mirror of the kernel's KVM uapi (linux/kvm.h, asm/kvm.h) for x86-64.

Names are the kernel's own so that the header and this file can be read side
by side; tests/unit/test_kvm_uapi.py compiles a C program against the real
headers and checks every size and the offsets that matter.
"""

from __future__ import annotations

from ctypes import Structure, Union, c_char, c_uint8, c_uint16, c_uint32, c_uint64, sizeof

KVMIO = 0xAE
KVM_API_VERSION = 12

# ioctl number encoding from asm-generic/ioctl.h
_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << _IOC_DIRSHIFT) | (KVMIO << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT)


def _io(nr: int) -> int:
    return _ioc(_IOC_NONE, nr, 0)


def _ior(nr: int, struct: type) -> int:
    return _ioc(_IOC_READ, nr, sizeof(struct))


def _iow(nr: int, struct: type) -> int:
    return _ioc(_IOC_WRITE, nr, sizeof(struct))


def _iowr(nr: int, struct: type) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, nr, sizeof(struct))


# --- structures -------------------------------------------------------------


class kvm_regs(Structure):
    _fields_ = [(name, c_uint64) for name in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")]


class kvm_segment(Structure):
    _fields_ = [
        ("base", c_uint64), ("limit", c_uint32), ("selector", c_uint16), ("type", c_uint8),
        ("present", c_uint8), ("dpl", c_uint8), ("db", c_uint8), ("s", c_uint8),
        ("l", c_uint8), ("g", c_uint8), ("avl", c_uint8), ("unusable", c_uint8), ("padding", c_uint8),
    ]


class kvm_dtable(Structure):
    _fields_ = [("base", c_uint64), ("limit", c_uint16), ("padding", c_uint16 * 3)]


KVM_NR_INTERRUPTS = 256


class kvm_sregs(Structure):
    _fields_ = [(name, kvm_segment) for name in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")] + [
        ("gdt", kvm_dtable), ("idt", kvm_dtable),
        ("cr0", c_uint64), ("cr2", c_uint64), ("cr3", c_uint64), ("cr4", c_uint64), ("cr8", c_uint64),
        ("efer", c_uint64), ("apic_base", c_uint64),
        ("interrupt_bitmap", c_uint64 * ((KVM_NR_INTERRUPTS + 63) // 64)),
    ]


class _events_exception(Structure):
    _fields_ = [("injected", c_uint8), ("nr", c_uint8), ("has_error_code", c_uint8),
                ("pending", c_uint8), ("error_code", c_uint32)]


class _events_interrupt(Structure):
    _fields_ = [("injected", c_uint8), ("nr", c_uint8), ("soft", c_uint8), ("shadow", c_uint8)]


class _events_nmi(Structure):
    _fields_ = [("injected", c_uint8), ("pending", c_uint8), ("masked", c_uint8), ("pad", c_uint8)]


class _events_smi(Structure):
    _fields_ = [("smm", c_uint8), ("pending", c_uint8), ("smm_inside_nmi", c_uint8), ("latched_init", c_uint8)]


class kvm_vcpu_events(Structure):
    _fields_ = [
        ("exception", _events_exception), ("interrupt", _events_interrupt), ("nmi", _events_nmi),
        ("sipi_vector", c_uint32), ("flags", c_uint32), ("smi", _events_smi),
        ("triple_fault_pending", c_uint8), ("reserved", c_uint8 * 26),
        ("exception_has_payload", c_uint8), ("exception_payload", c_uint64),
    ]


class kvm_sync_regs(Structure):
    _fields_ = [("regs", kvm_regs), ("sregs", kvm_sregs), ("events", kvm_vcpu_events)]


KVM_SYNC_X86_REGS = 1 << 0
KVM_SYNC_X86_SREGS = 1 << 1
KVM_SYNC_X86_EVENTS = 1 << 2


class kvm_userspace_memory_region(Structure):
    _fields_ = [("slot", c_uint32), ("flags", c_uint32), ("guest_phys_addr", c_uint64),
                ("memory_size", c_uint64), ("userspace_addr", c_uint64)]


class kvm_coalesced_mmio_zone(Structure):
    _fields_ = [("addr", c_uint64), ("size", c_uint32), ("pio", c_uint32)]


class kvm_coalesced_mmio(Structure):
    _fields_ = [("phys_addr", c_uint64), ("len", c_uint32), ("pio", c_uint32), ("data", c_uint8 * 8)]


class kvm_coalesced_mmio_ring(Structure):
    _fields_ = [("first", c_uint32), ("last", c_uint32)]  # followed by kvm_coalesced_mmio entries


class kvm_msr_entry(Structure):
    _fields_ = [("index", c_uint32), ("reserved", c_uint32), ("data", c_uint64)]


class kvm_msrs(Structure):
    _fields_ = [("nmsrs", c_uint32), ("pad", c_uint32)]  # followed by kvm_msr_entry entries


def kvm_msrs_with(count: int) -> type[Structure]:
    """A kvm_msrs with room for `count` entries (the kernel's flexible array)."""
    return type("kvm_msrs_n", (Structure,), {"_fields_": [
        ("nmsrs", c_uint32), ("pad", c_uint32), ("entries", kvm_msr_entry * count)]})


class kvm_cpuid_entry2(Structure):
    _fields_ = [("function", c_uint32), ("index", c_uint32), ("flags", c_uint32), ("eax", c_uint32),
                ("ebx", c_uint32), ("ecx", c_uint32), ("edx", c_uint32), ("padding", c_uint32 * 3)]


class kvm_cpuid2(Structure):
    _fields_ = [("nent", c_uint32), ("padding", c_uint32)]  # followed by kvm_cpuid_entry2 entries


def kvm_cpuid2_with(count: int) -> type[Structure]:
    """A kvm_cpuid2 with room for `count` entries (the kernel's flexible array)."""
    return type("kvm_cpuid2_n", (Structure,), {"_fields_": [
        ("nent", c_uint32), ("padding", c_uint32), ("entries", kvm_cpuid_entry2 * count)]})


class kvm_irq_level(Structure):
    _fields_ = [("irq", c_uint32), ("level", c_uint32)]


class kvm_pit_config(Structure):
    _fields_ = [("flags", c_uint32), ("pad", c_uint32 * 15)]


class kvm_mp_state(Structure):
    _fields_ = [("mp_state", c_uint32)]


class kvm_enable_cap(Structure):
    _fields_ = [("cap", c_uint32), ("flags", c_uint32), ("args", c_uint64 * 4), ("pad", c_uint8 * 64)]


class kvm_guest_debug_arch(Structure):
    _fields_ = [("debugreg", c_uint64 * 8)]


class kvm_guest_debug(Structure):
    _fields_ = [("control", c_uint32), ("pad", c_uint32), ("arch", kvm_guest_debug_arch)]


class kvm_interrupt(Structure):
    _fields_ = [("irq", c_uint32)]


class kvm_debug_exit_arch(Structure):
    _fields_ = [("exception", c_uint32), ("pad", c_uint32), ("pc", c_uint64), ("dr6", c_uint64), ("dr7", c_uint64)]


# --- struct kvm_run and its exit union --------------------------------------


class _run_hw(Structure):
    _fields_ = [("hardware_exit_reason", c_uint64)]


class _run_fail_entry(Structure):
    _fields_ = [("hardware_entry_failure_reason", c_uint64), ("cpu", c_uint32)]


class _run_ex(Structure):
    _fields_ = [("exception", c_uint32), ("error_code", c_uint32)]


class _run_io(Structure):
    _fields_ = [("direction", c_uint8), ("size", c_uint8), ("port", c_uint16),
                ("count", c_uint32), ("data_offset", c_uint64)]


class _run_debug(Structure):
    _fields_ = [("arch", kvm_debug_exit_arch)]


class _run_mmio(Structure):
    _fields_ = [("phys_addr", c_uint64), ("data", c_uint8 * 8), ("len", c_uint32), ("is_write", c_uint8)]


class _run_internal(Structure):
    _fields_ = [("suberror", c_uint32), ("ndata", c_uint32), ("data", c_uint64 * 16)]


class _run_emulation_failure(Structure):
    _fields_ = [("suberror", c_uint32), ("ndata", c_uint32), ("flags", c_uint64),
                ("insn_size", c_uint8), ("insn_bytes", c_uint8 * 15)]


class _run_system_event(Structure):
    _fields_ = [("type", c_uint32), ("ndata", c_uint32), ("data", c_uint64 * 16)]


class _run_exit_union(Union):
    _fields_ = [
        ("hw", _run_hw), ("fail_entry", _run_fail_entry), ("ex", _run_ex), ("io", _run_io),
        ("debug", _run_debug), ("mmio", _run_mmio), ("internal", _run_internal),
        ("emulation_failure", _run_emulation_failure), ("system_event", _run_system_event),
        ("padding", c_char * 256),
    ]


class _run_s(Union):
    _fields_ = [("regs", kvm_sync_regs), ("padding", c_char * 2048)]


class kvm_run(Structure):
    _fields_ = [
        ("request_interrupt_window", c_uint8), ("immediate_exit", c_uint8), ("padding1", c_uint8 * 6),
        ("exit_reason", c_uint32), ("ready_for_interrupt_injection", c_uint8), ("if_flag", c_uint8),
        ("flags", c_uint16), ("cr8", c_uint64), ("apic_base", c_uint64),
        ("u", _run_exit_union),
        ("kvm_valid_regs", c_uint64), ("kvm_dirty_regs", c_uint64),
        ("s", _run_s),
    ]


# Layouts for the per-exit hot path, which unpacks kvm_run's bytes directly instead of walking
# ctypes objects (the unit tests check them against the structures above).
EXIT_REASON_FORMAT = "<I"  # kvm_run.exit_reason
IO_EXIT_FORMAT = "<BBHIQ"  # kvm_run.io: direction, size, port, count, data_offset
RING_HEAD_FORMAT = "<II"  # kvm_coalesced_mmio_ring: first, last
COALESCED_ENTRY_FORMAT = "<QII8s"  # kvm_coalesced_mmio: phys_addr, len, pio, data

# --- constants --------------------------------------------------------------

KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24

KVM_EXIT_NAMES = {
    0: "UNKNOWN", 1: "EXCEPTION", 2: "IO", 3: "HYPERCALL", 4: "DEBUG", 5: "HLT", 6: "MMIO",
    7: "IRQ_WINDOW_OPEN", 8: "SHUTDOWN", 9: "FAIL_ENTRY", 10: "INTR", 11: "SET_TPR", 12: "TPR_ACCESS",
    16: "NMI", 17: "INTERNAL_ERROR", 21: "WATCHDOG", 24: "SYSTEM_EVENT", 26: "IOAPIC_EOI",
    29: "X86_RDMSR", 30: "X86_WRMSR", 33: "X86_BUS_LOCK", 37: "NOTIFY",
}

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

KVM_INTERNAL_ERROR_EMULATION = 1
KVM_INTERNAL_ERROR_SIMUL_EX = 2
KVM_INTERNAL_ERROR_DELIVERY_EV = 3
KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4
KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES = 1 << 0

KVM_SYSTEM_EVENT_SHUTDOWN = 1
KVM_SYSTEM_EVENT_RESET = 2
KVM_SYSTEM_EVENT_CRASH = 3

KVM_CAP_IRQCHIP = 0
KVM_CAP_USER_MEMORY = 3
KVM_CAP_NR_VCPUS = 9
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_COALESCED_MMIO = 15
KVM_CAP_SET_GUEST_DEBUG = 23
KVM_CAP_PIT2 = 33
KVM_CAP_INTERNAL_ERROR_DATA = 40
KVM_CAP_MAX_VCPUS = 66
KVM_CAP_SYNC_REGS = 74
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_COALESCED_PIO = 162
KVM_CAP_X86_TRIPLE_FAULT_EVENT = 218

KVM_MP_STATE_RUNNABLE = 0
KVM_MP_STATE_HALTED = 3

KVM_GUESTDBG_ENABLE = 0x1
KVM_GUESTDBG_SINGLESTEP = 0x2
KVM_GUESTDBG_USE_SW_BP = 0x10000
KVM_GUESTDBG_USE_HW_BP = 0x20000

# --- ioctl numbers (derived from the structure sizes, as the kernel does) ---

KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, kvm_cpuid2)
KVM_CREATE_VCPU = _io(0x41)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, kvm_userspace_memory_region)
KVM_SET_TSS_ADDR = _io(0x47)
KVM_SET_IDENTITY_MAP_ADDR = _iow(0x48, c_uint64)
KVM_CREATE_IRQCHIP = _io(0x60)
KVM_IRQ_LINE = _iow(0x61, kvm_irq_level)
KVM_REGISTER_COALESCED_MMIO = _iow(0x67, kvm_coalesced_mmio_zone)
KVM_UNREGISTER_COALESCED_MMIO = _iow(0x68, kvm_coalesced_mmio_zone)
KVM_CREATE_PIT2 = _iow(0x77, kvm_pit_config)
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, kvm_regs)
KVM_SET_REGS = _iow(0x82, kvm_regs)
KVM_GET_SREGS = _ior(0x83, kvm_sregs)
KVM_SET_SREGS = _iow(0x84, kvm_sregs)
KVM_INTERRUPT = _iow(0x86, kvm_interrupt)
KVM_GET_MSRS = _iowr(0x88, kvm_msrs)
KVM_SET_MSRS = _iow(0x89, kvm_msrs)
KVM_SET_CPUID2 = _iow(0x90, kvm_cpuid2)
KVM_GET_MP_STATE = _ior(0x98, kvm_mp_state)
KVM_SET_MP_STATE = _iow(0x99, kvm_mp_state)
KVM_SET_GUEST_DEBUG = _iow(0x9B, kvm_guest_debug)
KVM_GET_VCPU_EVENTS = _ior(0x9F, kvm_vcpu_events)
KVM_SET_VCPU_EVENTS = _iow(0xA0, kvm_vcpu_events)
KVM_ENABLE_CAP = _iow(0xA3, kvm_enable_cap)

PAGE_SIZE = 4096
