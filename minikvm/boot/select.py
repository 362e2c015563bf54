"""Which loader a guest image needs, and the call to it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..arch.x86.state import BootState, Mode
from ..memory import GuestMemory
from .errors import ImageError
from .flat import load_flat
from .multiboot import find_header, load_multiboot
from .paging_layout import load_paging_abi

ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class BootRequest:
    """Everything the command line says about how to start one guest."""

    image: bytes
    path: str
    mode: Mode
    load: int | None = None
    entry: int | None = None
    pages: str = "4k"  # --paging layout: 4 KiB or 4 MiB (PSE) pages
    cr0: int | None = None
    cr4: int | None = None
    cmdline: str = ""  # multiboot command line (--append)


def is_multiboot(image: bytes, path: str) -> bool:
    """True for an image with a (valid) Multiboot header; a bad header raises ImageError."""
    return find_header(image, path) is not None


def load_guest(mem: GuestMemory, request: BootRequest, note: Callable[[str], None] | None = None) -> BootState:
    image, path = request.image, request.path
    if is_multiboot(image, path):
        return load_multiboot(mem, image, path, request.cmdline, note=note)
    if image.startswith(ELF_MAGIC):
        raise ImageError(path, "an ELF file without a Multiboot header: minikvm boots ELF kernels that carry "
                         "one (or give it a flat binary: objcopy -O binary)")
    if request.mode is Mode.PAGING:
        return load_paging_abi(mem, image, path, request.load, request.entry, request.pages,
                               request.cr0, request.cr4)
    return load_flat(mem, image, request.mode, path, request.load, request.entry, request.cr0, request.cr4)
