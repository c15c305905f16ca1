"""The database: tables, engines and migrations (db), the job queue (jobs) and the policy registry (policies).

Imported by both app and trainer; imports neither, and never torch.
"""
