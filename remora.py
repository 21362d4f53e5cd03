#!/usr/bin/env python3
"""Development shim: ``python remora.py ...`` runs the CLI from a checkout without installing."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from remora.cli import main

if __name__ == "__main__":
    main()
