"""The names of what a trial reports to Tune, apart from the searchers and schedulers that read them: a trial's
process imports these without Optuna or Tune's search algorithms."""

from __future__ import annotations

OBJECTIVE = "heldout_return"  # reported once, by a trial that finished
PROGRESS = "eval_return"  # reported after every periodic evaluation
TIME_ATTR = "episode"  # episodes done when the result was reported
