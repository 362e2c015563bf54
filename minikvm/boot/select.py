"""Which loader a guest image needs, and the call to it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..arch.x86.state import BootState, Mode
from ..memory import GuestMemory
from .errors import ImageError
from .flat import check_fits, default_load, load_flat
from .multiboot import ELF_MAGIC, HEADER_SEARCH, HEADER_SIZE_VIDEO, find_header, load_multiboot
from .paging_layout import load_paging_abi

# Enough of a file to find its Multiboot header and judge it as in the whole file: the header
# starts in the first 8 KiB and is at most HEADER_SIZE_VIDEO bytes long.
_HEAD_SIZE = HEADER_SEARCH + HEADER_SIZE_VIDEO


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


def _refuse_plain_elf(image: bytes, path: str) -> None:
    if image.startswith(ELF_MAGIC):
        raise ImageError(path, "an ELF file without a Multiboot header: minikvm boots ELF kernels that carry "
                         "one (or give it a flat binary: objcopy -O binary)")


def check_image_size(path: Path, size: int, mode: Mode, memory: int, load: int | None = None) -> None:
    """Refuse, before it is read, a file of `size` bytes that cannot fit in `memory` bytes of RAM.

    load_guest would refuse it too, but only once it had been read whole: gigabytes, for a wrong
    file. The words are the flat loader's. A Multiboot kernel may be bigger than its RAM (only
    its segments are loaded), so the head of the file is judged first, as load_guest judges it.
    """
    if size <= memory:
        return
    with path.open("rb") as stream:
        head = stream.read(_HEAD_SIZE)
    if is_multiboot(head, str(path)):
        return
    _refuse_plain_elf(head, str(path))
    if load is None:
        load = default_load(mode)
    check_fits(str(path), size, load, memory, f"{memory // 1024} KiB of guest RAM")


def load_guest(mem: GuestMemory, request: BootRequest, note: Callable[[str], None] | None = None) -> BootState:
    image, path = request.image, request.path
    if is_multiboot(image, path):
        return load_multiboot(mem, image, path, request.cmdline, note=note)
    _refuse_plain_elf(image, path)
    if request.mode is Mode.PAGING:
        return load_paging_abi(mem, image, path, request.load, request.entry, request.pages,
                               request.cr0, request.cr4)
    return load_flat(mem, image, request.mode, path, request.load, request.entry, request.cr0, request.cr4)
