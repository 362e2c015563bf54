"""Shared test policy: KVM tests skip without /dev/kvm only when MINIKVM_REQUIRE_KVM is unset."""

from __future__ import annotations

import os

import pytest


def kvm_unavailable_reason() -> str | None:
    """Why this process cannot use KVM, or None when it can."""
    from minikvm.errors import MinikvmError
    from minikvm.kvm.system import Kvm

    try:
        Kvm().close()
    except MinikvmError as err:
        return str(err)
    return None


@pytest.fixture(scope="session")
def kvm_required() -> None:
    reason = kvm_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("MINIKVM_REQUIRE_KVM"):
        pytest.fail(f"MINIKVM_REQUIRE_KVM is set but KVM is unusable: {reason}")
    pytest.skip(f"needs a usable /dev/kvm: {reason}")
