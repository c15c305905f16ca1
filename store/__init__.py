"""The database: tables, engines and migrations (db), leased work (leases) under the job queue (jobs) and the sweeps,
the policy registry (policies), and the settings every process shares (settings).

Imported by both app and trainer; imports neither, and never torch.
"""
