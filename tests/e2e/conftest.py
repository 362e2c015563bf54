"""Fixtures for the end-to-end tests, which drive the installed `minikvm` and `kvm-vmm`.

Tests that run guests take `kvm_required` (tests/conftest.py): without a
usable /dev/kvm they skip, naming what is missing, unless MINIKVM_REQUIRE_KVM
is set, in which case they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def tiny_guest(tmp_path: Path) -> Callable[[str, bytes], Path]:
    """Write a guest image into tmp_path: tiny_guest('spin', SPIN) → tmp_path/spin.bin."""

    def make(name: str, code: bytes) -> Path:
        path = tmp_path / f"{name}.bin"
        path.write_bytes(code)
        return path

    return make


@pytest.fixture(scope="session")
def mount_namespace() -> list[str]:
    """The command prefix that runs a shell script in a private mount namespace (root only).

    The tests that fake a missing or inaccessible /dev/kvm bind-mount over it
    there, so the host's /dev/kvm is never touched.
    """
    missing = [tool for tool in ("unshare", "mount", "setpriv") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (util-linux) to fake /dev/kvm in a mount namespace")
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_SYS_ADMIN) to fake /dev/kvm in a mount namespace")
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
    probe = subprocess.run([*prefix, "mount -t tmpfs none /mnt"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount in a private mount namespace here: {probe.stderr.decode().strip()}")
    return prefix
