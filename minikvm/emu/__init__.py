"""The software CPU: Unicorn, plus the interrupt and exception delivery it lacks."""
