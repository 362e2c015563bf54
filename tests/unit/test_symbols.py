"""Guest symbols from ELF files: real guests, and files broken in ways a symbol reader must survive."""

from __future__ import annotations

import io
import random
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from minikvm.debug.symbols import SymbolsError, SymbolTable

REPO = Path(__file__).resolve().parents[2]
GUESTS = ("hctest", "hello_64")  # a 32-bit and a 64-bit ELF: their section headers differ in layout
SHT_PROGBITS = 1


@pytest.fixture(scope="module")
def guest_elfs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The guests' ELF files, built with guests/Makefile as the bundled ones are."""
    out = tmp_path_factory.mktemp("guests")
    targets = [str(out / f"{name}.elf") for name in GUESTS]
    subprocess.run(["make", "-s", "-C", str(REPO / "guests"), f"B={out}", *targets], check=True, capture_output=True)
    return {name: (out / f"{name}.elf").read_bytes() for name in GUESTS}


def section_header(image: bytes, name: str) -> tuple[int, bool]:
    """The file offset of section `name`'s header, and whether the file is ELF64."""
    elf = ELFFile(io.BytesIO(image))
    index = next(i for i, section in enumerate(elf.iter_sections()) if section.name == name)
    return elf["e_shoff"] + index * elf["e_shentsize"], elf.elfclass == 64


def with_symtab_type(image: bytes, sh_type: int) -> bytes:
    offset, _ = section_header(image, ".symtab")
    broken = bytearray(image)
    struct.pack_into("<I", broken, offset + 4, sh_type)  # sh_type follows sh_name in both classes
    return bytes(broken)


@pytest.mark.parametrize("name", GUESTS)
def test_a_guests_symbols_are_read(tmp_path: Path, guest_elfs: dict[str, bytes], name: str) -> None:
    path = tmp_path / f"{name}.elf"
    path.write_bytes(guest_elfs[name])
    table = SymbolTable.from_elf(path)
    start = table.by_name["_start"]
    assert table.describe(start) == "_start" and table.describe(start + 2) == "_start+0x2"


@pytest.mark.parametrize("name", GUESTS)
def test_a_symtab_section_that_is_not_a_symbol_table_is_refused(tmp_path: Path, guest_elfs: dict[str, bytes],
                                                                 name: str) -> None:
    path = tmp_path / "bad.elf"
    path.write_bytes(with_symtab_type(guest_elfs[name], SHT_PROGBITS))
    with pytest.raises(SymbolsError, match=r"bad\.elf: its \.symtab section has type SHT_PROGBITS, not SHT_SYMTAB"):
        SymbolTable.from_elf(path)


def test_a_string_table_past_what_seek_can_reach_is_refused(tmp_path: Path, guest_elfs: dict[str, bytes]) -> None:
    offset, _ = section_header(guest_elfs["hello_64"], ".strtab")
    broken = bytearray(guest_elfs["hello_64"])
    struct.pack_into("<Q", broken, offset + 24, 1 << 63)  # Elf64_Shdr.sh_offset
    path = tmp_path / "far.elf"
    path.write_bytes(broken)
    with pytest.raises(SymbolsError, match=r"far\.elf: is not a readable ELF file"):
        SymbolTable.from_elf(path)


def test_what_is_not_a_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SymbolsError, match=r"missing\.elf: no such file"):
        SymbolTable.from_elf(tmp_path / "missing.elf")
    with pytest.raises(SymbolsError, match="is not a regular file"):
        SymbolTable.from_elf(tmp_path)


def test_a_broken_elf_beside_the_binary_means_no_symbols(tmp_path: Path, guest_elfs: dict[str, bytes]) -> None:
    image = tmp_path / "hctest.bin"
    image.write_bytes(b"\xf4")
    (tmp_path / "hctest.elf").write_bytes(guest_elfs["hctest"])
    table = SymbolTable.beside(str(image))
    assert table is not None and "_start" in table.by_name
    (tmp_path / "hctest.elf").write_bytes(with_symtab_type(guest_elfs["hctest"], SHT_PROGBITS))
    assert SymbolTable.beside(str(image)) is None
    assert SymbolTable.beside(str(tmp_path / "hctest.elf")) is None  # the guest is that ELF itself


def mutate(rng: random.Random, image: bytes) -> bytes:
    """A truncation, or a few random 1-8 byte values written mostly over the ELF and section headers."""
    if rng.random() < 0.2:
        return image[:rng.randrange(len(image))]
    elf = ELFFile(io.BytesIO(image))
    headers = range(elf["e_shoff"], elf["e_shoff"] + elf["e_shnum"] * elf["e_shentsize"])
    mutated = bytearray(image)
    for _ in range(rng.randint(1, 6)):
        where = rng.random()
        offset = rng.choice(headers) if where < 0.5 else rng.randrange(64) if where < 0.7 else rng.randrange(len(image))
        width = rng.choice((1, 2, 4, 8))
        mutated[offset:offset + width] = rng.randbytes(width)
    return bytes(mutated)


def test_a_mangled_elf_gives_symbols_or_a_symbols_error(tmp_path: Path, guest_elfs: dict[str, bytes]) -> None:
    """Whatever the damage, never another exception: that would end a run as an internal error."""
    rng = random.Random(20240601)
    path = tmp_path / "mangled.elf"
    outcomes = {"table": 0, "refused": 0}
    for _ in range(400):
        path.write_bytes(mutate(rng, guest_elfs[rng.choice(GUESTS)]))
        try:
            SymbolTable.from_elf(path)
            outcomes["table"] += 1
        except SymbolsError as err:
            assert err.path == str(path)
            outcomes["refused"] += 1
    assert min(outcomes.values()) > 50, outcomes  # the damage both spared and broke symbol tables
