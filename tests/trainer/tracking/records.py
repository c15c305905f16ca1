"""A short, made-up reward history in the training loop's own record types."""

from __future__ import annotations

from trainer.records import EpisodeRecord, EvaluationRecord
from trainer.tracking import RunTracker, TrackerGroup

STEPS_PER_EPISODE = 200
EPISODE_RETURNS = [-1500.0, -1200.5, -900.25, -400.0, -150.75]
EVALUATIONS = [(1, -1100.0, 80.5), (4, -160.0, 12.25)]  # (after episode, mean, std)


def episodes() -> list[EpisodeRecord]:
    records = []
    for index, episode_return in enumerate(EPISODE_RETURNS):
        recent = EPISODE_RETURNS[max(0, index - 9) : index + 1]
        records.append(
            EpisodeRecord(
                episode=index,
                episode_return=episode_return,
                avg_return_10=sum(recent) / len(recent),
                env_steps=(index + 1) * STEPS_PER_EPISODE,
                wall_time=0.1 * (index + 1),
            )
        )
    return records


def evaluations() -> list[EvaluationRecord]:
    return [
        EvaluationRecord(
            episode=episode,
            env_steps=(episode + 1) * STEPS_PER_EPISODE,
            mean_return=mean,
            std_return=std,
            wall_time=0.1 * (episode + 1) + 0.05,
        )
        for episode, mean, std in EVALUATIONS
    ]


def feed(tracker: RunTracker | TrackerGroup) -> None:
    """What the training callback does: every episode, and the evaluation that ran after it (if any)."""
    by_episode = {e.episode: e for e in evaluations()}
    for record in episodes():
        tracker.log_episode(record)
        if record.episode in by_episode:
            tracker.log_evaluation(by_episode[record.episode])
