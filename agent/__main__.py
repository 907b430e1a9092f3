"""`python -m agent`: the same as the `broadcast-agent` command."""

import sys

from agent.update.launcher import main

sys.exit(main())
