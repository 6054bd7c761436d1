import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

# The processes the tests start (benchmark smoke runs, CLI commands, notebook kernels) inherit one
# thread too: with torch's default of a thread per core, a child sharing the two cores with the
# other test worker spins, e.g. the probconserv_gpme smoke run took 72 s of wall time and 85 s of
# CPU instead of 45 s and 43 s.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The suite checks the default seed scheme; a shell's PHYSML_SEED_SCHEME must not change that.
os.environ.pop("PHYSML_SEED_SCHEME", None)

import torch  # noqa: E402

# The suite's problems are small: one thread avoids oversubscribing the CI machine's two cores.
torch.set_num_threads(1)

# Property tests (hypothesis) draw their cases from a profile that HYPOTHESIS_PROFILE names:
# - "repeatable" (the default: `make test`, CI): the same cases on every run, seeded by each test,
#   with no example database, so a failure is the code's and reruns the same, never a new draw;
# - "explore" (`HYPOTHESIS_PROFILE=explore make test`, or pytest's `--hypothesis-profile=explore`):
#   fresh random cases on every run, 1000 of them where a test sets no `max_examples` of its own
#   (a test's own count stands), the failures found kept in `.hypothesis/` and replayed first.
# Neither has a deadline: a slow, shared machine is no failure.
HYPOTHESIS_PROFILE = "HYPOTHESIS_PROFILE"
"""The environment variable naming the hypothesis profile the suite runs under."""
settings.register_profile("repeatable", derandomize=True, database=None, deadline=None)
settings.register_profile(
    "explore", derandomize=False, max_examples=1000, deadline=None, print_blob=True
)
PROFILES = ("repeatable", "explore")
_profile = os.environ.get(HYPOTHESIS_PROFILE, "repeatable")
if _profile not in PROFILES:
    raise pytest.UsageError(
        f"{HYPOTHESIS_PROFILE} must name a hypothesis profile, one of {', '.join(PROFILES)}, "
        f"got {_profile!r}"
    )
settings.load_profile(_profile)
