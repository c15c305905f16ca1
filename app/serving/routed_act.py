"""POST /act beyond the default route: a named model, a rollout's split, sessions with their rewards, and shadows.

runtime.act_content answers a request that gives observations alone from the default model's champion with one
branch; everything else comes here. Nothing here waits on the database except loading an explicitly requested
policy that is not in memory yet (as before models existed). Every check that can refuse a request runs before
anything is changed, so a refused request leaves its session as it was.
"""

from __future__ import annotations

import random
import time

import orjson

from app.infra.errors import ApiError, field_error, not_found
from app.infra.metrics import Metrics
from app.serving.experience import STEP, ExperienceRecorder
from app.serving.observations import ActExtras, ActInput, FloatArray
from app.serving.policy_cache import LoadedPolicy, PolicyCache, PolicyUnavailableError
from app.serving.recording_plan import ExplorePlan, explore_noise
from app.serving.routing import Routing
from app.serving.served_models import ActiveRollout, Arm, ServedModel, choose
from app.serving.sessions import LiveSession
from app.serving.warm_up import WARM_UP_NOISE_SCALE, is_warm_up, uniform_action
from models.registry_vocabulary import SPLIT_BUCKETS
from models.reward_ranges import outside

NO_POLICY_RETRY_AFTER_SECONDS = 5


def no_policy(model: str | None = None) -> ApiError:
    if model is None:
        advice = "no policy is loaded yet: train one (POST /train) or set POLICY_FILE"
    else:
        # A model created from its spaces cannot be trained here: importing and learning are its ways to a policy.
        advice = (
            f"model {model!r} has no champion policy yet: train one (POST /train), import one "
            f"(POST /models/{model}/policies) or start its learner (PUT /models/{model}/learner)"
        )
    return ApiError(
        503,
        "no_policy",
        f"{advice}; retry shortly",
        headers={"Retry-After": str(NO_POLICY_RETRY_AFTER_SECONDS)},
    )


async def explicit_policy(cache: PolicyCache, policy_id: int) -> LoadedPolicy:
    try:
        found = await cache.get(policy_id)
    except PolicyUnavailableError:
        raise ApiError(503, "policy_unavailable", f"policy {policy_id} cannot be loaded") from None
    if found is None:
        raise not_found("policy", policy_id)
    return found


def check_obs_dim(parsed: ActInput, loaded: LoadedPolicy) -> None:
    if parsed.obs_dim != loaded.actor.obs_dim:
        field = "observations[0]" if parsed.batched else "observation"
        expected, policy_id = loaded.actor.obs_dim, loaded.policy_id
        raise field_error(field, f"expected {expected} numbers (obs_dim of policy {policy_id}), got {parsed.obs_dim}")


def answer(parsed: ActInput, loaded: LoadedPolicy, metrics: Metrics) -> tuple[bytes, object]:
    """The JSON answer and the actions in it (a list for one observation, an array for a batch)."""
    metrics.act_batch_size.observe(parsed.count)
    if parsed.batched:
        actions = loaded.actor.act(parsed.observations)
        content = orjson.dumps({"actions": actions, "policy_id": loaded.policy_id}, option=orjson.OPT_SERIALIZE_NUMPY)
        return content, actions
    action = loaded.actor.act_one(parsed.observations)
    return orjson.dumps({"action": action, "policy_id": loaded.policy_id}), action


def _unknown_model(name: str) -> ApiError:
    message = f"no model named {name!r} (GET /models lists them)"
    return ApiError(404, "not_found", f"model: {message}", details=[{"field": "model", "message": message}])


def _check_belongs(loaded: LoadedPolicy, model: ServedModel) -> None:
    if loaded.model_id is not None and loaded.model_id != model.model_id:
        raise field_error("policy_id", f"policy {loaded.policy_id} is not a version of model {model.name!r}")


async def act_routed(routing: Routing, parsed: ActInput) -> bytes:
    """The answer of a request that names a model, a policy or a session, or that meets a rollout."""
    cache, metrics = routing.cache, routing.metrics
    extras = parsed.extras
    if extras is not None and extras.policy_id is not None and extras.session is None:
        loaded = await explicit_policy(cache, extras.policy_id)
        if extras.model is not None:
            _check_belongs(loaded, _model(routing, extras.model))
        check_obs_dim(parsed, loaded)
        return answer(parsed, loaded, metrics)[0]
    name = routing.default_model if extras is None or extras.model is None else extras.model
    model = _model(routing, name, named=extras is not None and extras.model is not None)
    if extras is not None and extras.session is not None:
        return await _act_in_session(routing, model, extras, parsed)
    # Without a session: every request on its own. Written out rather than through choose(), because a shadow
    # rollout sends every request of the model here and each call was measurable at these speeds.
    champion, rollout = model.champion, model.rollout
    if champion is None:
        raise no_policy(name)
    serving, arm = champion, "champion"
    if rollout is not None and rollout.canary and random.randrange(SPLIT_BUCKETS) < rollout.threshold:
        serving, arm = rollout.challenger, "challenger"
    check_obs_dim(parsed, serving)
    content, actions = answer(parsed, serving, metrics)
    metrics.routed.labels(name, arm).inc()
    if rollout is not None and not rollout.canary:
        sample_shadow(routing, model.name, rollout, parsed, actions)
    return content


def _model(routing: Routing, name: str, *, named: bool = True) -> ServedModel:
    model = routing.cache.models.get(name)
    if model is None:
        # The default model before the registry could be read (database down at start) is "no policy yet", as before.
        raise _unknown_model(name) if named and name != routing.default_model else no_policy()
    return model


async def _act_in_session(routing: Routing, model: ServedModel, extras: ActExtras, parsed: ActInput) -> bytes:
    cache, metrics = routing.cache, routing.metrics
    session_id = extras.session
    assert session_id is not None
    key = (model.name, session_id)
    live = routing.sessions.get(key)
    arm: Arm = "champion"
    if live is not None:
        loaded, rollout_id = live.policy, live.rollout_id
        if extras.policy_id is not None and extras.policy_id != loaded.policy_id:
            raise field_error(
                "policy_id", f"session {session_id!r} is pinned to policy {loaded.policy_id} until its episode ends"
            )
        if model.rollout is not None and loaded is model.rollout.challenger:
            arm = "challenger"
    elif extras.policy_id is not None and is_warm_up(extras.policy_id):
        # A warm-up session that began on another process (or before a publish): it keeps the warm-up.
        if model.warm_up is None:
            raise field_error("policy_id", f"model {model.name!r} has no learner: its warm-up (-1) is over")
        loaded, rollout_id = model.warm_up, 0
    elif extras.policy_id is not None:
        # A session this process has not seen, pinned by the client to the policy its earlier answers named (the
        # episode began on another process, maybe before a promotion): serve exactly that one.
        loaded = await explicit_policy(cache, extras.policy_id)
        _check_belongs(loaded, model)
        rollout = model.rollout
        on_trial = rollout is not None and loaded.policy_id in (rollout.challenger.policy_id, _champion_id(model))
        rollout_id = rollout.rollout_id if rollout is not None and on_trial else 0
        if rollout is not None and loaded is rollout.challenger:
            arm = "challenger"
    else:
        choice = choose(model, session_id)
        if choice is None and model.warm_up is not None:
            choice = (model.warm_up, "champion", 0)  # an online learner's warm-up, until its first publish
        if choice is None:
            raise no_policy(model.name)
        loaded, arm, rollout_id = choice
    check_obs_dim(parsed, loaded)
    if extras.reward is not None and model.reward_range is not None and outside(model.reward_range, extras.reward):
        low, high = model.reward_range
        raise field_error("reward", f"must be within model {model.name!r}'s reward range [{low:g}, {high:g}]")
    recording = model.recording
    noise: FloatArray | None = None
    actions: object
    if is_warm_up(loaded.policy_id):
        metrics.act_batch_size.observe(1)
        actions, noise = uniform_action(loaded.actor)
        content = orjson.dumps({"action": actions, "policy_id": loaded.policy_id})
    elif recording is None or recording.explore is None:
        content, actions = answer(parsed, loaded, metrics)
    else:
        content, actions, noise = _answer_exploring(
            parsed, loaded, metrics, recording.explore, extras=extras, live=live
        )
    # Accepted: from here on the session changes.
    if live is None:
        live = routing.sessions.start(key, loaded, rollout_id, model.model_id)
        metrics.sessions_started.labels(model.name).inc()
    live.steps += 1
    if extras.reward is not None:
        live.episode_return += extras.reward
    if recording is not None:
        _record_step(
            routing.experience,
            model,
            live,
            extras=extras,
            observation=parsed.observations,
            actions=actions,
            noise=noise,
        )
    elif live.pending is not None:  # recording stopped mid-episode: the held step has nowhere to go
        live.pending = None
    if extras.ends_episode:
        routing.sessions.end(key)
        if not is_warm_up(loaded.policy_id):  # the warm-up is no policy: it has no live return
            routing.live.episode(live.rollout_id, loaded.policy_id, live.episode_return)
        metrics.episodes_finished.labels(model.name, str(loaded.policy_id)).inc()
        if recording is not None:
            routing.experience.episode_ended(model.model_id, live.explored, live.episode_return)
    metrics.routed.labels(model.name, arm).inc()
    if model.rollout is not None and not model.rollout.canary:
        sample_shadow(routing, model.name, model.rollout, parsed, actions)
    return content


def _answer_exploring(
    parsed: ActInput,
    loaded: LoadedPolicy,
    metrics: Metrics,
    explore: ExplorePlan,
    *,
    extras: ActExtras,
    live: LiveSession | None,
) -> tuple[bytes, object, FloatArray | None]:
    """The answer of a session step of a model that records and explores: the policy's action, plus noise (clipped
    to the action bounds) when the session explores; never for the request that ends an episode (its action is not
    recorded)."""
    session_id = extras.session
    assert session_id is not None
    if extras.ends_episode or not _explores(explore, session_id, live):
        content, actions = answer(parsed, loaded, metrics)
        return content, actions, None
    metrics.act_batch_size.observe(1)
    action, noise = explore_noise(explore, loaded.actor.act_one(parsed.observations))
    return orjson.dumps({"action": action, "policy_id": loaded.policy_id}), action, noise


def _explores(plan: ExplorePlan, session_id: str, live: LiveSession | None) -> bool:
    """Whether the session explores under `plan`: kept by the live session, so the keyed hash runs once per plan
    rather than on every step (a new plan, after a settings change, works it out again)."""
    if live is None:
        return plan.explores(session_id)
    if live.explore_plan is not plan:
        live.explore_plan, live.explores = plan, plan.explores(session_id)
    return live.explores


def _record_step(
    experience: ExperienceRecorder,
    model: ServedModel,
    live: LiveSession,
    *,
    extras: ActExtras,
    observation: FloatArray,
    actions: object,
    noise: FloatArray | None,
) -> None:
    """Complete the step the session held with this request's observation, reward and ending; hold this one. On
    every recorded step: the held step is a tuple (app.serving.experience.PendingStep), not an object of its own."""
    pending = live.pending
    done, truncated = extras.done, extras.truncated
    if pending is not None:
        session_id = extras.session
        assert session_id is not None
        experience.record(
            model.model_id,
            model.name,
            pending,
            reward=extras.reward,
            next_observation=observation,
            terminated=done,
            truncated=truncated,
            session=session_id,
            episode=live.episode,
        )
    if done or truncated:
        live.pending = None
        return
    assert isinstance(actions, list)
    policy_id = live.policy.policy_id
    scale = 0.0
    if noise is not None:
        live.explored = True
        recording = model.recording
        if is_warm_up(policy_id):
            scale = WARM_UP_NOISE_SCALE
        elif recording is not None and recording.explore is not None:
            scale = recording.explore.sigma
    step = 0 if pending is None else pending[STEP] + 1
    live.pending = (observation, actions, noise, scale, policy_id, step, time.time())


def _champion_id(model: ServedModel) -> int | None:
    return None if model.champion is None else model.champion.policy_id


def sample_shadow(routing: Routing, model: str, rollout: ActiveRollout, parsed: ActInput, actions: object) -> None:
    """Queue this answer for the shadow challenger, for `percent` of the requests."""
    if rollout.percent < 100 and random.random() * 100 >= rollout.percent:  # sampling, not a secret
        return
    routing.shadow.submit(model, rollout, parsed.observations, actions)
