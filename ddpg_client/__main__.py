"""`python -m ddpg_client rollout ...` / `python -m ddpg_client act ...` (see ddpg_client.cli)."""

import sys

from ddpg_client.cli import main

sys.exit(main())
