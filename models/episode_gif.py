"""One episode of a policy, run headless and turned into a small animated GIF with the return on the frames.

Torch-free on purpose: the API imports this module (for `GET /policies/{id}/rollout.gif`) and must never import
torch. gymnasium and Pillow are imported lazily inside the functions, so importing this module costs nothing
and a process without gymnasium only fails when it actually renders.

The GIF is kept small (every 2nd frame, 250 px, one shared 32-colour palette: 60-150 kB for Pendulum's 200
steps) so that rendering takes about a second and the endpoint can afford it once per policy.

Entry points: `render_episode` (GIF plus its numbers), `render_episode_gif` (bytes only),
`episode_gif_for_weights` (from safetensors bytes: the API endpoint, which keeps what it renders per policy) and
`write_episode_gif` (from a weights file to a GIF file: the trainer CLI).
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from episodes import Step, run_episodes
from models.policy import NumpyActor
from models.registry_vocabulary import CLIENT_ENV_PREFIX

if TYPE_CHECKING:
    from PIL.Image import Image as PilImage

logger = logging.getLogger(__name__)

# The tag in every GIF already written (files on disk, cached copies): kept as it was when the module was renamed.
GIF_COMMENT_PREFIX = "ddpg-rollout"
DEFAULT_SIZE = 250
DEFAULT_FRAME_EVERY = 2
# Long enough to read the final return before the GIF loops.
FINAL_FRAME_HOLD_MS = 1500
PALETTE_COLOURS = 32
_TEXT_COLOUR = (0, 0, 0)
_FINAL_TEXT_COLOUR = (170, 20, 20)

# pygame's renderer keeps module-level state (pygame.init, fonts); rendering from two threads at once (the API
# runs sync endpoints in a thread pool) is not something pygame promises to support, so renders take turns.
_render_lock = threading.Lock()


class RenderUnavailableError(RuntimeError):
    """gymnasium or its pygame renderer is not installed in this process (e.g. a slim API image)."""


@dataclass(frozen=True)
class EpisodeGif:
    """A rendered episode: the GIF bytes and the numbers written on its frames."""

    gif: bytes
    episode_return: float
    steps: int
    max_steps: int | None
    env_id: str
    seed: int


def _prepare_headless() -> None:
    """Make pygame work without a display and keep its banner off stdout (the CLI's stdout is for results)."""
    # setdefault: an operator who set a driver on purpose keeps it; rgb_array rendering needs no display anyway.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


def rendering_available() -> bool:
    """Whether this process can render (gymnasium, pygame and Pillow installed), without importing them."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("gymnasium", "pygame", "PIL"))
    except (ImportError, ValueError):
        return False


def _require_gymnasium(render: bool) -> None:
    """RenderUnavailableError now, with the install hint, when this process cannot run (or render) an episode."""
    _prepare_headless()
    try:
        import gymnasium  # noqa: F401
    except ImportError as exc:
        raise RenderUnavailableError(
            f"gymnasium is not installed here ({exc}); pip install 'gymnasium[classic-control]'"
        ) from None
    # Pendulum imports pygame only on the first render(); checking now gives one clear error instead.
    if render and not rendering_available():
        raise RenderUnavailableError(
            "rendering needs pygame and Pillow: pip install 'gymnasium[classic-control]' pillow"
        )


def _time_limit(env: Any) -> int | None:
    spec = getattr(env, "spec", None)
    limit = getattr(spec, "max_episode_steps", None)
    return int(limit) if limit is not None else None


def server_side_env(env_id: str) -> str:
    """`env_id`, when this side can make it: a policy of a model created from its spaces (no id, or `client/NAME`)
    has its environment with the clients, so there is no episode to run or render here (a ValueError: 422)."""
    if not env_id or env_id.startswith(CLIENT_ENV_PREFIX):
        raise ValueError("its model's environment lives with its clients: there is no environment here to run it in")
    return env_id


def run_episode(actor: NumpyActor, env_id: str | None = None, seed: int = 0, max_steps: int | None = None) -> float:
    """The undiscounted return of one deterministic episode (no exploration noise), without rendering."""
    env_id = server_side_env(env_id or actor.weights.env_id)
    _require_gymnasium(render=False)
    (result,) = run_episodes(
        actor.act, env_id, [seed], max_steps=max_steps, obs_dim=actor.obs_dim, act_dim=actor.act_dim
    )
    return result.episode_return


def frame_caption(episode_return: float, step: int, max_steps: int | None) -> str:
    """The line written on every frame, e.g. `return -143.2  step 57/200`."""
    of = f"/{max_steps}" if max_steps is not None else ""
    return f"return {episode_return:.1f}  step {step}{of}"


def final_caption(episode_return: float) -> str:
    """The extra line on the last frame."""
    return f"final return {episode_return:.1f}"


def gif_comment(episode_return: float, steps: int, env_id: str, seed: int) -> str:
    """Machine-readable summary stored in the GIF's comment extension, so a GIF on disk says what it shows."""
    return f"{GIF_COMMENT_PREFIX} env={env_id} seed={seed} steps={steps} return={episode_return!r}"


def render_episode(
    actor: NumpyActor,
    *,
    env_id: str | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    fps: int = 30,
    size: int = DEFAULT_SIZE,
    frame_every: int = DEFAULT_FRAME_EVERY,
) -> EpisodeGif:
    """Run one episode with `rgb_array` rendering and return the GIF together with its return.

    `env_id` defaults to the policy's own; `max_steps` to the environment's time limit; `fps` is the
    environment's playback speed (every `frame_every`-th step is kept, so each GIF frame lasts
    `frame_every / fps` seconds and the animation plays in real time).
    """
    if fps < 1:
        raise ValueError(f"fps must be at least 1, got {fps}")
    if frame_every < 1:
        raise ValueError(f"frame_every must be at least 1, got {frame_every}")
    if not 16 <= size <= 2000:
        raise ValueError(f"size must be between 16 and 2000 pixels, got {size}")
    env_id = server_side_env(env_id or actor.weights.env_id)

    from PIL import Image, ImageDraw, ImageFont

    # (rgb frame, return so far, step) for the kept steps; step 0 is the starting position.
    captured: list[tuple[np.ndarray[Any, Any], float, int]] = []
    limits: list[int | None] = []

    def capture_start(start: Step) -> None:
        limits.append(_time_limit(start.env))
        captured.append((np.asarray(start.env.render()), 0.0, 0))

    def capture_step(step: Step) -> None:
        # Rendering is most of the cost, so skipped steps are never rendered; the last one always is.
        if step.done or step.step % frame_every == 0:
            captured.append((np.asarray(step.env.render()), step.episode_return, step.step))

    with _render_lock:
        _require_gymnasium(render=True)
        (result,) = run_episodes(
            actor.act,
            env_id,
            [seed],
            max_steps=max_steps,
            on_step=capture_step,
            on_reset=capture_start,
            render_mode="rgb_array",
            obs_dim=actor.obs_dim,
            act_dim=actor.act_dim,
        )
    total, step, limit = result.episode_return, result.steps, limits[0]

    font_size = max(10, round(13 * size / DEFAULT_SIZE))
    font = ImageFont.load_default(size=font_size)
    margin = max(3, size // 40)
    line_height = font_size + 3
    images: list[PilImage] = []
    palette: PilImage | None = None
    for index, (rgb, running_return, at_step) in enumerate(captured):
        image = Image.fromarray(rgb)
        image = _downscale(image, size)
        draw = ImageDraw.Draw(image)
        draw.text((margin, margin), frame_caption(running_return, at_step, limit), fill=_TEXT_COLOUR, font=font)
        is_last = index == len(captured) - 1
        if is_last:
            draw.text((margin, margin + line_height), final_caption(total), fill=_FINAL_TEXT_COLOUR, font=font)
        if palette is None:
            # One palette for all frames: per-frame median-cut costs ~10 ms a frame, and the scene's colours do
            # not change. The final caption's colour is seeded in so it maps to itself, not to a near grey.
            palette = _shared_palette(image, extra=_FINAL_TEXT_COLOUR)
        images.append(image.quantize(palette=palette, dither=Image.Dither.NONE))

    frame_ms = round(1000 * frame_every / fps)
    durations = [frame_ms] * len(images)
    durations[-1] = max(frame_ms, FINAL_FRAME_HOLD_MS)
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=durations,
        loop=0,
        optimize=False,
        comment=gif_comment(total, step, env_id, seed).encode(),
    )
    gif = buffer.getvalue()
    logger.debug(
        "rendered %s seed=%d: %d steps, return %.1f, %d frames, %d bytes",
        env_id,
        seed,
        step,
        total,
        len(images),
        len(gif),
    )
    return EpisodeGif(gif=gif, episode_return=total, steps=step, max_steps=limit, env_id=env_id, seed=seed)


def render_episode_gif(
    actor: NumpyActor,
    *,
    env_id: str | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    fps: int = 30,
) -> bytes:
    """The animated GIF of one episode (see `render_episode` for the numbers behind it)."""
    return render_episode(actor, env_id=env_id, seed=seed, max_steps=max_steps, fps=fps).gif


def episode_gif_for_weights(weights: bytes, *, seed: int = 0) -> bytes:
    """The GIF of a policy file's episode (the API endpoint; it keeps the result per policy and seed).

    Raises `models.weights.WeightsFormatError` for invalid bytes, `RenderUnavailableError` when this process
    cannot render. Blocking (about a second): call it from a thread, not the event loop.
    """
    return render_episode_gif(NumpyActor.from_bytes(weights), seed=seed)


def write_episode_gif(
    weights_path: str | Path,
    out_path: str | Path,
    seed: int = 0,
    *,
    max_steps: int | None = None,
) -> EpisodeGif:
    """Render the episode of the actor file at `weights_path` into `out_path` (the trainer CLI's `--gif`)."""
    actor = NumpyActor.from_file(weights_path)
    episode = render_episode(actor, seed=seed, max_steps=max_steps)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a reader never sees half a GIF.
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(episode.gif)
    tmp.replace(out)
    logger.info(
        "wrote %s (%d bytes): %s seed=%d return %.1f",
        out,
        len(episode.gif),
        episode.env_id,
        seed,
        episode.episode_return,
    )
    return episode


def read_gif_comment(gif: bytes) -> dict[str, str]:
    """Parse the summary `render_episode` stores in a GIF's comment ({} when there is none)."""
    from PIL import Image

    with Image.open(io.BytesIO(gif)) as image:
        raw = image.info.get("comment", b"")
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    if not text.startswith(GIF_COMMENT_PREFIX):
        return {}
    fields = dict(part.split("=", 1) for part in text.split()[1:] if "=" in part)
    return fields


def _downscale(image: PilImage, size: int) -> PilImage:
    width, height = image.size
    if width == height and width % size == 0:
        # Integer box reduction (500 -> 250 for Pendulum) is several times faster than a resampling resize.
        return image.reduce(width // size)
    from PIL import Image

    scale = size / max(width, height)
    return image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR)


def _shared_palette(image: PilImage, *, extra: tuple[int, int, int]) -> PilImage:
    from PIL import Image

    # Median cut on the first frame plus a strip of the extra colour, so that colour gets its own entry.
    probe = Image.new("RGB", (image.width, image.height + 4), extra)
    probe.paste(image, (0, 0))
    return probe.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT)
