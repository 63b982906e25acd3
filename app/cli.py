"""`python -m app.cli`: the command-line client (app.tools.cli), under its documented name."""

import sys

from app.tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
