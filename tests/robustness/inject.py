"""`minikvm run` with a bug planted in it: an internal exception at a chosen place, once guests run.

    python -m tests.robustness.inject PLACE [minikvm run arguments...]

PLACE is where a RuntimeError is raised, the 5th time that code runs:
  tick     the main thread's periodic work during the run (output and screen refresh)
  device   a device on the vCPU thread (the UART's register write)
  report   writing a guest's stop report (the vCPU thread, after the guest stopped)

minikvm must still restore the terminal, say one line, and exit (1, an internal error).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

PLACES = ("tick", "device", "report")


def _planted(function: Callable, after: int = 5) -> Callable:
    calls = [0]

    def wrapper(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        if calls[0] == after:
            raise RuntimeError(f"planted bug in {function.__qualname__}")
        return function(*args, **kwargs)

    return wrapper


def main() -> None:
    place, args = sys.argv[1], sys.argv[2:]
    if place not in PLACES:
        raise SystemExit(f"PLACE is one of {', '.join(PLACES)}")
    if place == "tick":
        from minikvm.console import OutputMux

        OutputMux.tick = _planted(OutputMux.tick)  # type: ignore[method-assign]
    elif place == "device":
        from minikvm.devices.uart import Uart16550

        Uart16550.write = _planted(Uart16550.write)  # type: ignore[method-assign]
    else:
        import minikvm.debug.report as report

        report.stop_line = _planted(report.stop_line, after=1)
    from minikvm.cli import entry_minikvm

    sys.argv = ["minikvm", "run", *args]
    entry_minikvm()


if __name__ == "__main__":
    main()
