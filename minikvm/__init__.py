"""minikvm: a small, readable x86 virtual machine monitor on the Linux KVM API."""

__version__ = "0.1.0"
