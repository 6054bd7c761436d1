import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# The processes the tests start (benchmark smoke runs, CLI commands, notebook kernels) inherit one
# thread too: with torch's default of a thread per core, a child sharing the two cores with the
# other test worker spins, e.g. the probconserv_gpme smoke run took 72 s of wall time and 85 s of
# CPU instead of 45 s and 43 s.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

# The suite's problems are small: one thread avoids oversubscribing the CI machine's two cores.
torch.set_num_threads(1)
