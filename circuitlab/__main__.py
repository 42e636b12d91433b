"""`python -m circuitlab ...` (and `torchrun -m circuitlab ...`): the same as the `circuitlab` command."""

import sys

from circuitlab.cli import main

sys.exit(main())
