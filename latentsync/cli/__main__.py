"""`python -m latentsync.cli ...` (what torchrun launches: `torchrun --nproc_per_node N -m latentsync.cli train-unet ...`)."""

import sys

from . import main

sys.exit(main())
