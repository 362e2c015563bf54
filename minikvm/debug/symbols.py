"""Guest symbols from an ELF file (pyelftools), for reports and the debugger."""

from __future__ import annotations

import bisect
from pathlib import Path

from ..boot.multiboot import ELF_MAGIC
from ..errors import MinikvmError


class SymbolsError(MinikvmError):
    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        super().__init__(f"{path}: {problem}")


class SymbolTable:
    """Function and label addresses, searchable by address ('main+0x12')."""

    def __init__(self, symbols: dict[int, str]) -> None:
        self._addresses = sorted(symbols)
        self._names = [symbols[a] for a in self._addresses]
        self.by_name = {name: address for address, name in symbols.items()}

    @classmethod
    def from_elf(cls, path: Path) -> SymbolTable:
        """The symbols of the ELF file at `path`; SymbolsError names the file when it has none to give."""
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
        from elftools.elf.sections import SymbolTableSection

        symbols: dict[int, str] = {}
        if not path.is_file():
            raise SymbolsError(str(path), "is not a regular file" if path.exists() else "no such file")
        try:
            with path.open("rb") as stream:
                elf = ELFFile(stream)
                table = elf.get_section_by_name(".symtab")
                if table is None:
                    raise SymbolsError(str(path), "has no symbol table (was it stripped?)")
                if not isinstance(table, SymbolTableSection):  # pyelftools goes by sh_type, not by the name
                    sh_type = table["sh_type"]  # a name, or the number when pyelftools knows none
                    raise SymbolsError(str(path), f"its .symtab section has type "
                                       f"{sh_type if isinstance(sh_type, str) else hex(sh_type)}, not SHT_SYMTAB")
                for symbol in table.iter_symbols():
                    kind = symbol["st_info"]["type"]
                    defined = symbol["st_shndx"] != "SHN_UNDEF"
                    if symbol.name and defined and kind in ("STT_FUNC", "STT_NOTYPE", "STT_OBJECT"):
                        symbols.setdefault(symbol["st_value"], symbol.name)
        # ValueError: pyelftools seeks wherever a corrupt offset points, and a file's seek() refuses 2**63 on.
        except (OSError, ELFError, ValueError) as err:
            raise SymbolsError(str(path), f"is not a readable ELF file ({err})") from None
        return cls(symbols)

    @classmethod
    def beside(cls, image_path: str) -> SymbolTable | None:
        """The symbols of an ELF image itself, or of the .elf the build left next to a .bin.

        A file there that is not a readable ELF only costs the reports their symbols."""
        path = Path(image_path)
        for candidate in (path, path.with_suffix(".elf")):
            try:
                if candidate.is_file() and _starts_like_elf(candidate):
                    return cls.from_elf(candidate)
            except (OSError, SymbolsError):
                continue
        return None

    def start_of(self, address: int) -> int | None:
        """The address of the nearest symbol at or below `address`."""
        i = bisect.bisect_right(self._addresses, address) - 1
        return self._addresses[i] if i >= 0 else None

    def describe(self, address: int) -> str | None:
        """'name' or 'name+0x1c' for the nearest symbol at or below `address`."""
        i = bisect.bisect_right(self._addresses, address) - 1
        if i < 0:
            return None
        offset = address - self._addresses[i]
        if offset > 0x10000:
            return None
        return self._names[i] if offset == 0 else f"{self._names[i]}+{offset:#x}"


def _starts_like_elf(path: Path) -> bool:
    with path.open("rb") as stream:  # only the magic: the image itself may be large
        return stream.read(len(ELF_MAGIC)) == ELF_MAGIC
