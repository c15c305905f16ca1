"""Store rows -> API schemas (the one place that knows both shapes)."""

from __future__ import annotations

from app.schemas.jobs import EpisodeOut, EvaluationOut, JobOut, JobProgress, RewardsOut
from app.schemas.policies import PolicyOut
from store.tables import EpisodeRow, EvaluationRow, Job, Policy


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]  # the table's CHECK constraint guarantees the literal
        promote=job.promote,  # type: ignore[arg-type]
        config=job.config,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
        cancel_requested=job.cancel_requested,
        progress=JobProgress(
            episodes_done=job.episodes_done,
            episodes_total=job.episodes_total,
            env_steps=job.env_steps,
            last_return=job.last_return,
            best_eval_return=job.best_eval_return,
        ),
        policy_id=job.policy_id,
        error=job.error,
    )


def policy_out(policy: Policy, default_policy_id: int | None) -> PolicyOut:
    return PolicyOut(
        id=policy.id,
        created_at=policy.created_at,
        sha256=policy.sha256,
        env_id=policy.env_id,
        obs_dim=policy.obs_dim,
        act_dim=policy.act_dim,
        eval_mean_return=policy.eval_mean_return,
        source_job_id=policy.source_job_id,
        is_default=policy.id == default_policy_id,
        meta=policy.meta,
    )


def rewards_out(job: Job, episodes: list[EpisodeRow], evaluations: list[EvaluationRow]) -> RewardsOut:
    return RewardsOut(
        job_id=job.id,
        status=job.status,  # type: ignore[arg-type]
        episodes=[
            EpisodeOut(
                episode=row.episode,
                episode_return=row.episode_return,
                avg_return_10=row.avg_return_10,
                env_steps=row.env_steps,
                wall_time=row.wall_time,
            )
            for row in episodes
        ],
        evaluations=[
            EvaluationOut(
                episode=row.episode,
                env_steps=row.env_steps,
                mean_return=row.mean_return,
                std_return=row.std_return,
                wall_time=row.wall_time,
            )
            for row in evaluations
        ],
    )
