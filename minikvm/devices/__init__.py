"""Devices: pure state machines behind port-I/O buses; no vCPU, no KVM."""
