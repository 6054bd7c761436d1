import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch

# The suite's problems are small: one thread avoids oversubscribing the CI machine's two cores.
torch.set_num_threads(1)
