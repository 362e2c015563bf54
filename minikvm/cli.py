"""Command lines: `minikvm …` and `kvm-vmm …` (the original Mini-KVM flags).

Both build GuestSpecs, run them through `machine.run_machines`, print one
stop line per guest on stderr and exit with DESIGN.md's status. Bad input
is one line on stderr and status 2, before any guest starts.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import re
import resource
import shutil
import signal
import stat
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO, NoReturn

from .arch.x86.state import Mode
from .boot import layout
from .boot.bundled import BUNDLED, DEFAULT_GUEST, GuestNotBuiltError, UnknownGuestError, find_bundled
from .errors import MinikvmError, printable
from .stop import StopKind, StopReason

EXIT_USAGE = 2

_SIZE = re.compile(r"^\s*(0x[0-9a-f]+|\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class UsageError(MinikvmError):
    """Bad command-line input (exit status 2)."""


def parse_size(text: str) -> int:
    """'4M', '256KiB', '1g', '0x400000' → bytes."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size (examples: 4M, 256K, 1G, 0x400000)")
    number = int(match.group(1), 0)
    unit = (match.group(2) or "").lower()[:1]
    return number * _UNITS[unit]


def format_size(size: int) -> str:
    """1099511627776 → '1T', 4194304 → '4M', 12345 → '12345' (the largest exact unit)."""
    for unit in "TGMK":
        scale = _UNITS[unit.lower()]
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


def parse_address(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an address (examples: 0x1000, 4096)") from None
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"address {text} is out of range")
    return value


def parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"seconds must be a positive number, not {text}")
    return value


_TRACE_MAX = 10_000_000


def parse_count(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of instructions") from None
    if not 0 < value <= _TRACE_MAX:
        raise argparse.ArgumentTypeError(f"the number of instructions must be 1 .. {_TRACE_MAX}, not {text}")
    return value


_HOST = re.compile(r"^[A-Za-z0-9.\-]+$")


def parse_gdb_address(text: str) -> tuple[str, int]:
    """'1234' → (127.0.0.1, 1234); ':1234' too; 'HOST:1234'; '[::1]:1234'."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        valid_host = bool(host) and all(c in "0123456789abcdefABCDEF:." for c in host)
    else:
        valid_host = not host or bool(_HOST.match(host))
    if not valid_host or not port.isdigit() or (sep and not port):
        raise argparse.ArgumentTypeError(f"'{text}' is not [HOST:]PORT (examples: 1234, 127.0.0.1:1234, "
                                         "0.0.0.0:1234)")
    number = int(port)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"port {number} is out of range (0 .. 65535)")
    return host or "127.0.0.1", number


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see '{self.prog} --help')")


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"minikvm: error: {printable(message)}\n")
    sys.exit(EXIT_USAGE)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--memory", type=parse_size, metavar="SIZE",
                        help="guest RAM per guest (default: 1M for real mode, 4M otherwise)")
    parser.add_argument("--timeout", type=parse_seconds, metavar="SECONDS",
                        help="stop every guest after this long (exit status 124)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="print setup steps and one line per VM exit on stderr")
    parser.add_argument("--stats", action="store_true",
                        help="at the end: exits by reason and port, time in guest vs VMM")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="stdout carries the guest output only, byte for byte; nothing else is printed")
    parser.add_argument("--log-dir", type=Path, metavar="DIR",
                        help="also write each guest's raw output to DIR/<name>.log")
    parser.add_argument("--accel", choices=("kvm", "emu", "auto"), default="auto",
                        help="kvm, the software CPU (emu), or auto (default): KVM where this host's KVM can run "
                             "the guest's mode (see 'minikvm host'), the software CPU otherwise")
    parser.add_argument("--load", type=parse_address, metavar="ADDR",
                        help="guest-physical load address (default 0 in real mode, 0x1000 otherwise)")
    parser.add_argument("--entry", type=parse_address, metavar="ADDR",
                        help="entry point (default: the load address)")
    parser.add_argument("--input-grace", type=parse_seconds, default=0.5, metavar="SECONDS",
                        help="how long a guest may poll an exhausted input before it is stopped (0.5)")
    parser.add_argument("--cr0", type=parse_address, metavar="VALUE",
                        help="start with this CR0 instead of the mode's default (protected/paging/long mode)")
    parser.add_argument("--cr4", type=parse_address, metavar="VALUE",
                        help="start with this CR4 (e.g. --cr4 0: x87/SSE not enabled, as the original VMM did)")
    parser.add_argument("--pages", choices=("4k", "4m"),
                        help="page size of the --paging layout's tables: 4 KiB (default), or 4 MiB (PSE)")
    parser.add_argument("--append", default="", metavar="CMDLINE",
                        help="command line handed to a Multiboot kernel")
    parser.add_argument("--vga", choices=("auto", "on", "off"), default="auto",
                        help="show the guest's VGA text screen (0xB8000) live at the top of the terminal: "
                             "auto = once a single guest on a terminal writes to it")
    parser.add_argument("--screenshot", type=Path, metavar="FILE.png",
                        help="save each guest's final VGA text screen as a PNG (NAME-FILE.png with several guests)")
    parser.add_argument("--symbols", type=Path, metavar="ELF",
                        help="symbols for stop reports (default: the guest's own ELF, or NAME.elf beside NAME.bin)")
    parser.add_argument("--interrupts", action=argparse.BooleanOptionalAction, default=None,
                        help="give the guest an interrupt controller and timer (PIC, PIT, UART IRQ 4); "
                             "default: on for --paging guests (the 1K OS layout), off otherwise")
    parser.add_argument("--trace", type=parse_count, metavar="N",
                        help="keep the last N executed instructions (address, bytes, disassembly, registers "
                             "they changed) and show them with the stop report; slow: every instruction is "
                             "stepped (on KVM, one exit each)")
    parser.add_argument("--trace-file", type=Path, metavar="FILE",
                        help="write every executed instruction to FILE as the guest runs "
                             "(NAME-FILE with several guests)")
    parser.add_argument("--gdb", type=parse_gdb_address, metavar="[HOST:]PORT",
                        help="serve gdb's remote protocol on PORT (target remote HOST:PORT), on 127.0.0.1 "
                             "unless HOST says otherwise (0.0.0.0: every interface); PORT 0 picks a free one; "
                             "each guest is one gdb thread")
    parser.add_argument("--gdb-wait", action="store_true",
                        help="with --gdb: stop before the first instruction until gdb continues")


def build_minikvm_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="minikvm", description=(
        "A small x86 virtual machine monitor on Linux KVM. Runs flat binaries in real mode, "
        "32-bit protected mode and 64-bit long mode, one VM per guest, several guests in parallel."),
        epilog="exit status: 0 every guest ended cleanly, 1 a guest faulted or the accelerator failed, "
               "2 bad input, 124 timeout, 130 interrupted")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = commands.add_parser("run", help="run one or more guests",
                              description="Run guests: each GUEST is a file (a flat binary) or the name of "
                                          f"a bundled guest (see 'minikvm guests'; default: {DEFAULT_GUEST}). "
                                          "Several guests run in parallel, one VM each.")
    run.add_argument("guests", nargs="*", metavar="GUEST")
    run.add_argument("--mode", choices=[m.value for m in Mode],
                     help="CPU mode for flat binaries: real (default), protected, paging (ABI.md's --paging "
                          "layout) or long; bundled guests and Multiboot kernels know their own")
    _add_run_options(run)
    commands.add_parser("guests", help="list the bundled guests")
    commands.add_parser("host", help="measure and show what this host's KVM can run")
    return parser


def build_kvm_vmm_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kvm-vmm", description=(
        "The original Mini-KVM command line, run by minikvm: real-mode guests by default, "
        "--long-mode for 64-bit guests. Each GUEST gets its own VM."))
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--paging", action="store_true",
                       help="32-bit protected mode with paging (the 1K OS layout of ABI.md)")
    modes.add_argument("--long-mode", action="store_true", help="64-bit long mode (ABI.md layout)")
    parser.add_argument("guests", nargs="+", metavar="GUEST")
    _add_run_options(parser)
    return parser


# --- from arguments to guests ------------------------------------------------


def _read_image(path: Path, mode: Mode, memory: int, load: int | None) -> bytes:
    """The image at `path`, read only once it can be loaded into `memory` bytes as `mode` at `load`."""
    from .boot.select import check_image_size

    if path.is_dir():
        raise UsageError(f"{path}: is a directory, not a guest image")
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{path}: is not a regular file (a device or a pipe cannot be a guest image)")
        if info.st_size > layout.MAX_MEMORY:
            raise UsageError(f"{path}: is {format_size(info.st_size)}, larger than any guest's memory")
        check_image_size(path, info.st_size, mode, memory, load)  # not gigabytes read to be refused
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except PermissionError:
        raise UsageError(f"{path}: permission denied") from None
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror}") from None
    except MemoryError:  # a Multiboot kernel's file may be larger than its RAM, and than ours
        raise UsageError(f"{path}: is {format_size(info.st_size)}, too large to read into memory") from None
    if not data:
        raise UsageError(f"{path}: the file is empty")
    return data


def resolve_guest(arg: str, mode: Mode | None) -> tuple[str, Path, Mode]:
    """A command-line GUEST → (name, path, mode); a Multiboot kernel's mode is decided by its loader."""
    path = Path(arg)
    if path.exists() or "/" in arg or path.suffix:
        return path.stem or arg, path, mode or Mode.REAL
    bundled = find_bundled(arg)
    if bundled is None:
        raise UnknownGuestError(arg)
    if not bundled.path.exists():
        raise GuestNotBuiltError(bundled)
    if mode is not None and mode is not bundled.mode:
        raise UsageError(f"bundled guest '{arg}' is a {bundled.mode.label} guest, not {mode.label}")
    return bundled.name, bundled.path, bundled.mode


def _unique(names: list[str]) -> list[str]:
    """Names that differ (labels, log, trace and screenshot files): a repeat gets -2, -3, …, skipping
    any name a guest already has (`hello hello hello-2` gives hello, hello-3, hello-2)."""
    given = set(names)
    used: set[str] = set()
    last: dict[str, int] = {}  # the suffix last given to each name: 100,000 repeats stay linear
    result = []
    for name in names:
        candidate, n = name, last.get(name, 1)
        while candidate in used or (n > 1 and candidate in given):
            n += 1
            candidate = f"{name}-{n}"
        last[name] = n
        used.add(candidate)
        result.append(candidate)
    return result


def _host_limits(memory_each: int) -> int:
    """How many guests of `memory_each` bytes this host can hold at once."""
    try:
        with open("/proc/meminfo") as meminfo:
            available = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        available = 1 << 40
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    by_fds = (soft - 32) // 3 if soft != resource.RLIM_INFINITY else 1 << 20  # VM, vCPU, /dev/kvm slack
    return max(0, min(available // max(memory_each, 1), by_fds))


def _guest_memory(args: argparse.Namespace, mode: Mode) -> int:
    """--memory, else the default for `mode`, in whole pages."""
    memory = args.memory if args.memory is not None else \
        (layout.REAL_MEMORY if mode is Mode.REAL else layout.PM_MEMORY)
    if memory < 64 * 1024 or memory > layout.MAX_MEMORY:
        raise UsageError(f"--memory {format_size(memory)} is outside 64K .. {format_size(layout.MAX_MEMORY)}")
    return -(-memory // 4096) * 4096


def build_specs(args: argparse.Namespace, mode: Mode | None) -> list:
    from .boot.select import is_multiboot
    from .machine import GuestSpec

    if args.quiet and args.verbose:
        raise UsageError("--quiet and --verbose contradict each other: choose one")
    if args.symbols is not None:
        from .debug.symbols import SymbolTable

        SymbolTable.from_elf(args.symbols)  # a missing or broken file is a usage error now, not mid-report

    resolved = [resolve_guest(arg, mode) for arg in args.guests]
    names = _unique([printable(name) for name, _, _ in resolved])  # labels and file names: one line each
    specs = []
    kernels = 0  # Multiboot kernels among the guests
    for name, (_, path, guest_mode) in zip(names, resolved, strict=True):
        image = _read_image(path, guest_mode, _guest_memory(args, guest_mode), args.load)
        multiboot = is_multiboot(image, str(path))
        if multiboot:
            guest_mode = Mode.PROTECTED  # GRUB's state: 32-bit protected mode, paging off
            kernels += 1
        memory = _guest_memory(args, guest_mode)
        interrupts = args.interrupts if args.interrupts is not None else guest_mode is Mode.PAGING
        specs.append(GuestSpec(name, str(path), image, guest_mode, memory, args.load, args.entry, args.pages or "4k",
                               args.cr0, args.cr4, args.append, interrupts))
    _check_options_apply(specs, kernels, args)
    capacity = _host_limits(max(s.memory for s in specs))
    if len(specs) > capacity:
        raise UsageError(f"{len(specs)} guests are too many for this host: at most {capacity} of "
                         f"{max(s.memory for s in specs) >> 10} KiB fit in its free memory and file limits")
    _check_output_files(specs, args)
    return specs


def _check_options_apply(specs: list, kernels: int, args: argparse.Namespace) -> None:
    """An option no guest would use is a mistake to say, not to ignore silently."""
    if args.append and not kernels:
        raise UsageError("--append is the command line of a Multiboot kernel, and none of the guests is one")
    if args.pages is not None and not any(spec.mode is Mode.PAGING for spec in specs):
        raise UsageError("--pages sets the page size of the --paging layout, and no guest runs in it "
                         "(use --mode paging)")
    if kernels == len(specs):  # a Multiboot header says where the kernel loads and starts, in which state
        given = [option for option, value in (("--load", args.load), ("--entry", args.entry), ("--cr0", args.cr0),
                                              ("--cr4", args.cr4)) if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} cannot apply to a Multiboot kernel: its header and the "
                             "Multiboot machine state decide")


def _per_guest(path: Path, name: str, several: bool) -> Path:
    """A --trace-file or --screenshot path for one guest: NAME-FILE when there are several."""
    return path.with_name(f"{name}-{path.name}") if several else path


def _check_output_files(specs: list, args: argparse.Namespace) -> None:
    """Files minikvm would write: never an input (that would destroy it), and writable now, not after
    the run."""
    inputs = {Path(spec.path).resolve(): spec.path for spec in specs}
    if args.symbols is not None:
        inputs[args.symbols.resolve()] = str(args.symbols)
    several = len(specs) > 1
    per_guest_options = (("--trace-file", getattr(args, "trace_file", None)),
                         ("--screenshot", getattr(args, "screenshot", None)))
    outputs = [(option, _per_guest(base, spec.name, several)) for option, base in per_guest_options
               if base is not None for spec in specs]
    if args.log_dir is not None:
        outputs += [("--log-dir", args.log_dir / f"{spec.name}.log") for spec in specs]
    for option, path in outputs:
        if path.resolve() in inputs:
            raise UsageError(f"{option}: {path} is the input {inputs[path.resolve()]}; writing it would destroy it")
        if option == "--screenshot":  # written at the end: a bad path would be found only after the run
            if path.is_dir() or not path.name:
                raise UsageError(f"--screenshot {path}: is a directory")
            parent = path.parent
            if not parent.is_dir():
                raise UsageError(f"--screenshot {path}: no directory {parent}")
            if not os.access(parent, os.W_OK):
                raise UsageError(f"--screenshot {path}: cannot write in {parent}")


# --- running ---------------------------------------------------------------


def run_guests(specs: list, args: argparse.Namespace) -> int:
    from .accel import choose
    from .console import GuestOutput, Keyboard, OutputMux, terminate
    from .debug.report import EXPLAINED, stop_line, stop_report
    from .debug.stats import stats_report
    from .devices.input import InputBuffer
    from .kvm.system import Kvm
    from .machine import Machine, MachineConfig, RunResult, run_machines

    quiet = args.quiet
    several = len(specs) > 1
    sys.stdout.flush()
    labelled = several and not quiet
    colour = labelled and os.isatty(sys.stdout.fileno()) and "NO_COLOR" not in os.environ
    mux = OutputMux(sys.stdout.fileno(), colour=colour, prefix=labelled)

    def drain_output(kind: type[BaseException] | None, *exc: object) -> None:
        """The last thing on every way out: what the guests wrote reaches stdout, unless Ctrl-C says not to wait."""
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            mux.give_up()
        try:
            with mux.lock:
                mux.drain()
        except KeyboardInterrupt:  # pressed again while a slow reader was waited for
            mux.give_up()
            with mux.lock:
                mux.drain()
            raise

    def say(text: str) -> None:
        if not quiet:
            with mux.lock:
                mux.drain()  # the guests' output first, then our words about it
                sys.stderr.write(text)  # on a raw terminal, ONLCR is kept on: "\n" still starts a line
                sys.stderr.flush()

    if args.log_dir is not None:
        if args.log_dir.exists() and not args.log_dir.is_dir():
            raise UsageError(f"--log-dir {args.log_dir}: is not a directory")
        try:
            args.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"--log-dir {args.log_dir}: {err.strerror}") from None

    if args.gdb_wait and args.gdb is None:
        raise UsageError("--gdb-wait needs --gdb [HOST:]PORT")
    choices = [_traceable(choose(args.accel, spec.mode, spec.interrupts), spec, args) for spec in specs]
    with ExitStack() as stack:
        stack.push(drain_output)
        # From here on SIGTERM unwinds like Ctrl-C, so every cleanup below runs.
        stack.callback(signal.signal, signal.SIGTERM, signal.signal(signal.SIGTERM, terminate))
        accelerators: dict[str, object] = {}
        for name in {choice.name for choice in choices}:
            if name == "kvm":
                accelerators[name] = Kvm()
            else:
                from .emu.cpu import Emu  # Unicorn is imported only for guests that run on it

                accelerators[name] = Emu()
            stack.callback(accelerators[name].close)  # type: ignore[attr-defined]
        inputs = [InputBuffer() for _ in specs]
        outputs: list[GuestOutput] = []
        machines: list[Machine] = []
        for index, spec in enumerate(specs):
            log = stack.enter_context(_open_log(args.log_dir / f"{spec.name}.log")) if args.log_dir else None
            outputs.append(mux.sink(spec.name, index, log))
            trace = (lambda text, n=spec.name: say(f"[{n}] {text}\n")) if args.verbose else None
            machine = Machine(MachineConfig(spec, input_grace=args.input_grace, trace=trace),
                              accelerators[choices[index].name], outputs[-1], inputs[index])
            stack.callback(machine.close)
            machines.append(machine)
            machine.loop.flush_output = outputs[-1].flush
        _attach_debugging(machines, specs, args, say, stack)

        def stop_all(why: str, kind: StopKind = StopKind.INTERRUPTED) -> None:
            for machine in machines:
                machine.request_stop(StopReason(kind, why))

        def quit_all() -> None:
            mux.give_up()
            stop_all("quit (Ctrl-A X)")

        mux.on_closed = lambda: stop_all(f"stopped: standard output failed ({mux.close_reason})",
                                         StopKind.OUTPUT_FAILED)

        held: list[str] = []  # reports wait while a live VGA view may still repaint the terminal

        def report(result: RunResult) -> None:
            index = [m.name for m in machines].index(result.name)
            outputs[index].flush()
            lines = [stop_line(result)]
            if result.stop.kind in EXPLAINED:  # the explainer (capstone, page walks) only where it has work
                from .debug.explain import explain

                lines += explain(machines[index], result, lambda: _symbols_for(specs[index], args))
            else:
                lines += stop_report(result)
            if args.trace:
                from .debug.trace import trace_lines

                symbols = _symbols_for(specs[index], args)
                lines += trace_lines(machines[index], symbols.describe if symbols is not None else None)
            if args.stats:
                lines += stats_report(result.stats, result.unclaimed)
            text = "".join(f"{line}\n" for line in lines)
            if screens.view is not None:
                held.append(text)
            else:
                say(text)

        # Input goes to the first guest; the others see end of input.
        for buffer in inputs[1:]:
            buffer.close()
        keyboard = stack.enter_context(Keyboard(inputs[0], quit_all, message=say))
        # Everything set up: only now is it worth saying which accelerator each guest got.
        say("".join(f"minikvm: {spec.name}: {choice.note}\n" for spec, choice in zip(specs, choices, strict=True)
                    if choice.note))
        if several:
            say("".join(f"{('[' + s.name + ']'):<16} {printable(s.path)} ({m.boot.mode.label}, {m.accel.name})\n"
                        for s, m in zip(specs, machines, strict=True)))
        screens = _screen_watcher(machines, mux, args,
                                  live=not several and not quiet and mux.isatty() and not keyboard.background)
        stack.callback(screens.finish)
        def tick() -> None:
            mux.tick(time.monotonic())
            screens.tick()

        results = run_machines(machines, timeout=args.timeout, on_result=report, on_tick=tick,
                               on_interrupt=mux.give_up)
        screens.finish()
        say("".join(held))
        _leave_screens(machines, screens, args, say)
    stops = [r.stop for r in results]
    if mux.closed and not any(stop.kind is StopKind.OUTPUT_FAILED for stop in stops):
        # The guests had finished by the time their output failed to be written: it still counts.
        lost = StopReason(StopKind.OUTPUT_FAILED, f"standard output failed ({mux.close_reason})")
        sys.stderr.write(f"minikvm: {lost.message}: the guests' output is incomplete\n")
        stops.append(lost)
    for machine, stop in zip(machines, [r.stop for r in results], strict=True):
        trace = getattr(machine.loop.debugger, "trace", None)
        if trace is not None and trace.failure and stop.kind is not StopKind.OUTPUT_FAILED:
            # It failed as the guest finished (the last buffered lines): the run itself had ended well.
            sys.stderr.write(f"minikvm: {machine.name}: {trace.failure}; the trace is incomplete\n")
            stops.append(StopReason(StopKind.OUTPUT_FAILED, trace.failure))
    return exit_status(stops)


def _open_log(path: Path) -> BinaryIO:
    try:
        return open(path, "wb")  # the caller's exit stack closes it
    except OSError as err:
        raise UsageError(f"--log-dir: cannot create {path}: {err.strerror}") from None


def _trace_file_failed(machine: object, why: str) -> None:
    """A trace file that cannot be written stops its guest, as a failed stdout does: the trace was asked for."""
    machine.loop.request_stop(StopReason(StopKind.OUTPUT_FAILED, why))  # type: ignore[attr-defined]


def _traceable(choice: object, spec: object, args: argparse.Namespace) -> object:
    """--trace on KVM needs single-stepping, which this host's KVM may not offer in the guest's mode."""
    if not (args.trace or args.trace_file) or choice.name != "kvm":  # type: ignore[attr-defined]
        return choice
    from .accel import Choice
    from .debug.trace import kvm_debug_support

    if kvm_debug_support(spec.mode).single_step:  # type: ignore[attr-defined]
        return choice
    why = f"this host's KVM cannot single-step {spec.mode.label} for --trace"  # type: ignore[attr-defined]
    if args.accel == "kvm":
        raise UsageError(f"{why} (use --accel emu or auto)")
    return Choice("emu", f"{why}; using the software CPU")


def _attach_debugging(machines: list, specs: list, args: argparse.Namespace, say: Callable[[str], None],
                      stack: ExitStack) -> None:
    """--trace, --trace-file, --gdb: execution control on every machine's run loop, and the gdb stub."""
    if not (args.trace or args.trace_file or args.gdb):
        return
    from .debug.gdbstub import GdbServer, GuestControl
    from .debug.trace import InstructionTrace

    controls = []
    for index, machine in enumerate(machines):
        trace = None
        if args.trace or args.trace_file:
            file = None
            if args.trace_file is not None:
                path = _per_guest(args.trace_file, machine.name, len(machines) > 1)
                try:
                    file = stack.enter_context(open(path, "w", encoding="utf-8"))  # noqa: SIM115
                except OSError as err:
                    raise UsageError(f"--trace-file {path}: {err.strerror}") from None
            symbols = _symbols_for(specs[index], args)
            trace = InstructionTrace(args.trace or 0, file, symbols.describe if symbols else None,  # type: ignore[attr-defined]
                                     functools.partial(_trace_file_failed, machine))
        control = GuestControl(machine, index + 1, trace=trace, wait=args.gdb_wait,
                               note=lambda text, n=machine.name: say(f"minikvm: {n}: {text}\n"))
        machine.loop.debugger = control
        controls.append(control)
    if args.gdb is not None:
        server = GdbServer(controls, *args.gdb)
        stack.callback(server.close)
        server.start()
        waiting = "the guests wait for gdb to continue" if args.gdb_wait else "the guests run"
        say(f"minikvm: gdb stub on {server.where} ({waiting}): gdb -ex 'target remote {server.where}'\n")


def _symbols_for(spec: object, args: argparse.Namespace) -> object:
    """--symbols FILE, else the guest's own ELF or the .elf its build left beside the .bin."""
    from .debug.symbols import SymbolTable

    if args.symbols is not None:
        return SymbolTable.from_elf(args.symbols)
    return SymbolTable.beside(spec.path)  # type: ignore[attr-defined]


def _screen_watcher(machines: list, mux: object, args: argparse.Namespace, live: bool) -> object:
    from .console import ScreenWatcher, VgaView

    view = None
    rows = shutil.get_terminal_size((80, 0)).lines
    if live and args.vga != "off" and VgaView.fits(rows):
        view = VgaView(mux, rows)  # type: ignore[arg-type]
    return ScreenWatcher([m.screen for m in machines], view, always=args.vga == "on")


def _leave_screens(machines: list, screens: object, args: argparse.Namespace, say: Callable[[str], None]) -> None:
    """--screenshot files, and the final screen as text when the guest drew one nobody saw."""
    for index, machine in enumerate(machines):
        screen = machine.screen()
        if screen is None:
            if args.screenshot is not None:
                say(f"minikvm: {machine.name}: no screenshot: its RAM ({machine.memory.size >> 10} KiB) does not "
                    "reach the VGA text screen at 0xb8000\n")
            continue
        if args.screenshot is not None:
            from .screen import save_png

            path = _per_guest(args.screenshot, machine.name, len(machines) > 1)
            try:
                save_png(screen, path)
            except OSError as err:
                say(f"minikvm: cannot write screenshot {path}: {err.strerror}\n")
        if args.vga != "off" and screens.changed(index) and not (index == 0 and screens.shown_live):  # type: ignore[attr-defined]
            lines = screen.text()
            while lines and not lines[-1].strip():
                lines.pop()
            say(f"{machine.name}: VGA text screen at the end:\n" + "".join(f"  |{line}\n" for line in lines))


def exit_status(stops: Sequence[StopReason]) -> int:
    """DESIGN.md: 130 interrupted, else 1 if any guest faulted, else 124 on timeout, else 0."""
    statuses = {stop.status for stop in stops}
    for status in (130, 1, 124):
        if status in statuses:
            return status
    return 0


def list_guests() -> int:
    for guest in BUNDLED:
        built = "" if guest.path.exists() else "  (not built: make -C guests)"
        print(f"{guest.name:<22} {guest.mode.value:<10} {guest.description}{built}")
    return 0


def _guarded(action: Callable[[], int]) -> int:
    """Run a command: minikvm's own errors are one line and status 2; an interrupt
    before or after the guests ran is status 130."""
    try:
        return action()
    except MinikvmError as err:
        _fail(str(err))
    except KeyboardInterrupt as interrupt:
        sys.stderr.write(f"minikvm: {str(interrupt) or 'interrupted'}\n")
        return 130
    except OSError as err:
        if err.errno in (errno.EMFILE, errno.ENFILE):
            _fail(f"out of file descriptors ({err.strerror}): each guest needs a few; raise the limit "
                  "(ulimit -n) or run fewer guests")
        if err.errno == errno.ENOMEM:
            _fail(f"out of memory ({err.strerror}): give the guests less --memory or run fewer of them")
        raise


def main(argv: list[str] | None = None) -> int:
    args = build_minikvm_parser().parse_args(argv)
    if args.command == "guests":
        return list_guests()
    if args.command == "host":
        from .accel import host_report

        print("\n".join(host_report()))
        return 0
    if args.command != "run":
        build_minikvm_parser().print_help()
        return EXIT_USAGE
    if not args.guests:
        args.guests = [DEFAULT_GUEST]
    mode = Mode(args.mode) if args.mode else None
    return _guarded(lambda: run_guests(build_specs(args, mode), args))


def kvm_vmm_main(argv: list[str] | None = None) -> int:
    args = build_kvm_vmm_parser().parse_args(argv)
    mode = Mode.PAGING if args.paging else Mode.LONG if args.long_mode else Mode.REAL
    return _guarded(lambda: run_guests(build_specs(args, mode), args))


def _hold_closed_standard_streams() -> list[str]:
    """Put /dev/null where fd 0, 1 or 2 is closed, and name those that were.

    A closed standard fd is handed out by the next open() (/dev/kvm, a log file), and whatever
    then writes to "stdout" would write into that file. Closed stdin is simply no input; closed
    stderr loses the messages but not the exit status."""
    closed = []
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            closed.append(name)
        null = os.open(os.devnull, os.O_RDWR)  # the lowest free fd: this one, as the lower ones are open
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        setattr(sys, name, open(fd, mode, closefd=False, buffering=1 if name == "stderr" else -1))  # noqa: SIM115 (for the whole run)
    return closed


def _exit_with(status: Callable[[], int]) -> NoReturn:
    closed = _hold_closed_standard_streams()
    try:
        if "stdout" in closed:
            _fail("standard output is closed: what minikvm prints would be lost (redirect it to /dev/null "
                  "to discard it)")
        code = status()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader of our stdout went away (`minikvm host | head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    except OSError as err:  # stdout on a full device, say
        sys.stderr.write(f"minikvm: cannot write the output: {err.strerror or err}\n")
        code = 1
    except Exception as err:  # a bug in minikvm: one line, and the traceback only on request
        if os.environ.get("MINIKVM_DEBUG"):
            raise
        sys.stderr.write(f"minikvm: internal error: {err!r} (run with MINIKVM_DEBUG=1 for the traceback; "
                         "please report it)\n")
        code = 1
    sys.exit(code)


def entry_minikvm() -> None:
    _exit_with(main)


def entry_kvm_vmm() -> None:
    _exit_with(kvm_vmm_main)
