"""The clocks a training time budget counts in: ``"wall"`` the elapsed seconds, ``"cpu"`` the CPU
seconds of this process (all its threads), the fair measure where other work shares the
machine."""

from __future__ import annotations

import time

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""Clock name -> a function of no argument giving seconds (only differences count)."""

CLOCK_CHOICE = " (what budget_s counts)"
"""What the ``clock`` setting chooses, for the message refusing another (``_checks.choice``)."""
