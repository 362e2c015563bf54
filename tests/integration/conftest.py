"""Integration tests run real guests on KVM: every test needs it (see tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _needs_kvm(kvm_required: None) -> None:
    """Skip or fail (MINIKVM_REQUIRE_KVM) before any guest is built."""
