"""`python -m app.scaffold`: the workflow-module generator (app.tools.scaffold), under its
documented name."""

import sys

from app.tools.scaffold import main

if __name__ == "__main__":
    sys.exit(main())
