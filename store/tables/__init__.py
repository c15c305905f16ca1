"""The schema, one module per concern: `base` (the declarative base, column types, `utcnow`), `work_queues` (jobs
and their histories, sweeps and trials, learners and publications), `registry` (models, policies, aliases,
rollouts, the change counter) and `serving_records` (live returns, recorded experience).

Importing any of them runs this first, which imports them all: tables refer to each other by name (foreign keys),
so `Base.metadata` must hold every table before one is created, flushed or compared by Alembic.
"""

from store.tables import base, registry, serving_records, work_queues

__all__ = ["base", "registry", "serving_records", "work_queues"]
