"""Shared test fixtures."""
from __future__ import annotations

import os

# Tests run on small CPU machines; keep torch and BLAS from oversubscribing the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
