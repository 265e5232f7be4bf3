"""`python -m services.cli` = `tsunagi` (the runner starts its children this way)."""
import sys

from services.cli import main

sys.exit(main())
