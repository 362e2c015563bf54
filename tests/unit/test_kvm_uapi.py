"""The ctypes mirror against the kernel's own headers: sizes, offsets, ioctl numbers.

A C program compiled against <linux/kvm.h> prints the real values, so a
wrong field or a hand-typed number cannot pass.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from minikvm.kvm import uapi

STRUCTS = ["kvm_regs", "kvm_segment", "kvm_dtable", "kvm_sregs", "kvm_vcpu_events", "kvm_sync_regs",
           "kvm_userspace_memory_region", "kvm_coalesced_mmio_zone", "kvm_coalesced_mmio",
           "kvm_coalesced_mmio_ring", "kvm_msr_entry", "kvm_msrs", "kvm_cpuid_entry2", "kvm_cpuid2",
           "kvm_irq_level", "kvm_pit_config", "kvm_mp_state", "kvm_enable_cap", "kvm_guest_debug",
           "kvm_interrupt", "kvm_debug_exit_arch", "kvm_run"]

OFFSETS = [("kvm_run", "exit_reason"), ("kvm_run", "immediate_exit"), ("kvm_run", "if_flag"),
           ("kvm_run", "cr8"), ("kvm_run", "apic_base"), ("kvm_run", "kvm_valid_regs"),
           ("kvm_run", "kvm_dirty_regs"), ("kvm_run", "s"), ("kvm_sregs", "gdt"), ("kvm_sregs", "cr0"),
           ("kvm_sregs", "efer"), ("kvm_sregs", "interrupt_bitmap"), ("kvm_segment", "type"),
           ("kvm_segment", "unusable"), ("kvm_regs", "rip"), ("kvm_vcpu_events", "exception_payload"),
           ("kvm_vcpu_events", "sipi_vector"), ("kvm_sync_regs", "events"), ("kvm_coalesced_mmio", "data"),
           ("kvm_guest_debug", "arch")]

# Fields inside kvm_run's exit union, as (C member path, ctypes path).
UNION_OFFSETS = [("io.port", ("io", "port")), ("io.count", ("io", "count")), ("io.data_offset", ("io", "data_offset")),
                 ("mmio.phys_addr", ("mmio", "phys_addr")), ("mmio.data", ("mmio", "data")),
                 ("mmio.len", ("mmio", "len")), ("mmio.is_write", ("mmio", "is_write")),
                 ("internal.suberror", ("internal", "suberror")), ("internal.data", ("internal", "data")),
                 ("emulation_failure.flags", ("emulation_failure", "flags")),
                 ("emulation_failure.insn_size", ("emulation_failure", "insn_size")),
                 ("emulation_failure.insn_bytes", ("emulation_failure", "insn_bytes")),
                 ("fail_entry.cpu", ("fail_entry", "cpu")), ("system_event.data", ("system_event", "data")),
                 ("debug.arch.pc", ("debug", "arch", "pc"))]

IOCTLS = ["KVM_GET_API_VERSION", "KVM_CREATE_VM", "KVM_CHECK_EXTENSION", "KVM_GET_VCPU_MMAP_SIZE",
          "KVM_GET_SUPPORTED_CPUID", "KVM_CREATE_VCPU", "KVM_SET_USER_MEMORY_REGION", "KVM_SET_TSS_ADDR",
          "KVM_SET_IDENTITY_MAP_ADDR", "KVM_CREATE_IRQCHIP", "KVM_IRQ_LINE", "KVM_REGISTER_COALESCED_MMIO",
          "KVM_UNREGISTER_COALESCED_MMIO", "KVM_CREATE_PIT2", "KVM_RUN", "KVM_GET_REGS", "KVM_SET_REGS",
          "KVM_GET_SREGS", "KVM_SET_SREGS", "KVM_INTERRUPT", "KVM_GET_MSRS", "KVM_SET_MSRS", "KVM_SET_CPUID2",
          "KVM_GET_MP_STATE", "KVM_SET_MP_STATE", "KVM_SET_GUEST_DEBUG", "KVM_GET_VCPU_EVENTS",
          "KVM_SET_VCPU_EVENTS", "KVM_ENABLE_CAP"]

CONSTANTS = ["KVM_EXIT_IO", "KVM_EXIT_HLT", "KVM_EXIT_MMIO", "KVM_EXIT_SHUTDOWN", "KVM_EXIT_FAIL_ENTRY",
             "KVM_EXIT_INTERNAL_ERROR", "KVM_EXIT_SYSTEM_EVENT", "KVM_EXIT_DEBUG", "KVM_EXIT_INTR",
             "KVM_CAP_COALESCED_PIO", "KVM_CAP_SYNC_REGS", "KVM_CAP_IMMEDIATE_EXIT",
             "KVM_CAP_X86_TRIPLE_FAULT_EVENT", "KVM_SYNC_X86_REGS", "KVM_GUESTDBG_SINGLESTEP",
             "KVM_INTERNAL_ERROR_EMULATION", "KVM_API_VERSION"]


@pytest.fixture(scope="module")
def kernel_values(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    if shutil.which("gcc") is None or not Path("/usr/include/linux/kvm.h").exists():
        pytest.fail("gcc and the kernel headers (linux-libc-dev) are needed to check the KVM structures")
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <linux/kvm.h>", "int main(void) {"]
    for name in STRUCTS:
        lines.append(f'printf("sizeof {name} %zu\\n", sizeof(struct {name}));')
    for struct, field in OFFSETS:
        lines.append(f'printf("offsetof {struct}.{field} %zu\\n", offsetof(struct {struct}, {field}));')
    for path, _ in UNION_OFFSETS:
        lines.append(f'printf("union {path} %zu\\n", offsetof(struct kvm_run, {path}));')
    for name in IOCTLS + CONSTANTS:
        lines.append(f'printf("value {name} %llu\\n", (unsigned long long)({name}));')
    lines += ["return 0;", "}"]
    workdir = tmp_path_factory.mktemp("uapi")
    source = workdir / "values.c"
    source.write_text("\n".join(lines))
    subprocess.run(["gcc", "-o", str(workdir / "values"), str(source)], check=True)
    out = subprocess.run([str(workdir / "values")], check=True, capture_output=True, text=True).stdout
    return {key: int(value) for kind, key, value in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("name", STRUCTS)
def test_struct_size_matches_kernel(kernel_values: dict[str, int], name: str) -> None:
    assert ctypes.sizeof(getattr(uapi, name)) == kernel_values[name]


@pytest.mark.parametrize(("struct", "field"), OFFSETS)
def test_field_offset_matches_kernel(kernel_values: dict[str, int], struct: str, field: str) -> None:
    assert getattr(getattr(uapi, struct), field).offset == kernel_values[f"{struct}.{field}"]


@pytest.mark.parametrize(("c_path", "py_path"), UNION_OFFSETS)
def test_exit_union_offsets_match_kernel(kernel_values: dict[str, int], c_path: str, py_path: tuple) -> None:
    offset = uapi.kvm_run.u.offset
    cls = type(uapi.kvm_run().u)
    for name in py_path:
        descriptor = getattr(cls, name)
        offset += descriptor.offset
        cls = type(getattr(cls(), name))
    assert offset == kernel_values[c_path]


@pytest.mark.parametrize("name", IOCTLS + CONSTANTS)
def test_ioctl_numbers_and_constants_match_kernel(kernel_values: dict[str, int], name: str) -> None:
    assert getattr(uapi, name) == kernel_values[name]


def test_hot_path_layouts_match_the_mirrored_structures() -> None:
    """The run loop unpacks kvm_run with struct formats: they must agree with the ctypes mirror."""
    import struct

    io = type(uapi.kvm_run().u.io)
    assert struct.calcsize(uapi.IO_EXIT_FORMAT) == ctypes.sizeof(io)
    codes = uapi.IO_EXIT_FORMAT[1:]
    offsets = [struct.calcsize("<" + codes[:i]) for i in range(len(codes))]  # where the format puts each field
    assert [getattr(io, name).offset for name, _ in io._fields_] == offsets
    assert struct.calcsize(uapi.EXIT_REASON_FORMAT) == ctypes.sizeof(ctypes.c_uint32)
    assert struct.calcsize(uapi.RING_HEAD_FORMAT) == ctypes.sizeof(uapi.kvm_coalesced_mmio_ring)
    assert struct.calcsize(uapi.COALESCED_ENTRY_FORMAT) == ctypes.sizeof(uapi.kvm_coalesced_mmio)
    entry = uapi.kvm_coalesced_mmio(0x3F8, 1, 1)
    entry.data[0] = 0x41
    assert struct.unpack(uapi.COALESCED_ENTRY_FORMAT, bytes(entry))[:3] == (0x3F8, 1, 1)
