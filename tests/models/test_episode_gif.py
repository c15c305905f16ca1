"""models.episode_gif: one headless episode of a torch-free actor, as an animated GIF with the return on it."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.episode_gif import (
    _FINAL_TEXT_COLOUR,
    RenderUnavailableError,
    episode_gif_for_weights,
    final_caption,
    frame_caption,
    read_gif_comment,
    render_episode,
    render_episode_gif,
    rendering_available,
    run_episode,
    write_episode_gif,
)
from models.policy import NumpyActor
from models.random_actor import random_actor_bytes as make_random_actor
from models.random_actor import random_policy_weights
from models.weights import WeightsFormatError, encode_policy

REPO_ROOT = Path(__file__).resolve().parents[2]
# Short episodes keep the suite fast; one test runs Pendulum's full 200 steps.
SHORT = 24


def random_actor_bytes(obs_dim: int = 3, hidden: int = 16, act_dim: int = 1, seed: int = 0) -> bytes:
    return make_random_actor(seed, obs_dim=obs_dim, act_dim=act_dim, hidden_size=hidden, config={"preset": "test"})


@pytest.fixture(scope="module")
def actor() -> NumpyActor:
    return NumpyActor.from_bytes(random_actor_bytes())


def _n_frames(image: Image.Image) -> int:
    # n_frames exists only on multi-frame formats (not in Pillow's type stubs for the base class).
    frames: int = getattr(image, "n_frames", 1)
    return frames


def gif_frames(gif: bytes) -> list[Image.Image]:
    frames = []
    with Image.open(io.BytesIO(gif)) as image:
        for index in range(_n_frames(image)):
            image.seek(index)
            frames.append(image.convert("RGB"))
    return frames


def test_gif_is_an_animated_gif89a(actor: NumpyActor) -> None:
    gif = render_episode_gif(actor, seed=1, max_steps=SHORT)
    assert gif.startswith(b"GIF89a")
    with Image.open(io.BytesIO(gif)) as image:
        assert image.format == "GIF"
        assert _n_frames(image) > 1
        assert max(image.size) == 250
    # The point of downscaling and one palette: a short episode stays small.
    assert len(gif) < 200_000


def test_renderer_return_is_run_episode_return(actor: NumpyActor) -> None:
    episode = render_episode(actor, seed=1, max_steps=SHORT)
    expected = run_episode(actor, "Pendulum-v1", seed=1, max_steps=SHORT)
    # Same seed, same deterministic actor: rendering must not change the episode.
    assert episode.episode_return == expected
    assert episode.steps == SHORT
    assert episode.episode_return < 0  # Pendulum's reward is never positive; 0 would mean nothing ran
    comment = read_gif_comment(episode.gif)
    assert float(comment["return"]) == expected
    assert comment["steps"] == str(SHORT)
    assert comment["seed"] == "1"


def test_seed_changes_the_episode(actor: NumpyActor) -> None:
    assert run_episode(actor, seed=1, max_steps=SHORT) != run_episode(actor, seed=2, max_steps=SHORT)


def test_captions_format_the_return_and_step() -> None:
    assert frame_caption(-143.24, 57, 200) == "return -143.2  step 57/200"
    assert frame_caption(-1.0, 3, None) == "return -1.0  step 3"
    assert final_caption(-1126.94) == "final return -1126.9"


def _has_colour(image: Image.Image, colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> bool:
    pixels = np.asarray(image.crop(box))
    return bool(np.any(np.all(pixels == np.asarray(colour, dtype=np.uint8), axis=-1)))


def test_text_is_drawn_and_final_return_only_on_last_frame(actor: NumpyActor) -> None:
    frames = gif_frames(render_episode_gif(actor, seed=1, max_steps=SHORT))
    caption_box = (0, 0, 250, 20)
    final_box = (0, 18, 250, 40)
    # The running caption is black text in the top band of every frame (the scene there is white).
    for frame in (frames[0], frames[len(frames) // 2], frames[-1]):
        assert _has_colour(frame, (0, 0, 0), caption_box)
    assert _has_colour(frames[-1], _FINAL_TEXT_COLOUR, final_box)
    assert not _has_colour(frames[0], _FINAL_TEXT_COLOUR, final_box)


def test_full_episode_written_to_file(tmp_path: Path) -> None:
    weights = tmp_path / "actor.safetensors"
    weights.write_bytes(random_actor_bytes(seed=3))
    out = tmp_path / "sub" / "rollout.gif"
    episode = write_episode_gif(weights, out, seed=7)
    assert out.read_bytes() == episode.gif
    assert episode.steps == episode.max_steps == 200  # Pendulum's own time limit
    assert episode.episode_return == run_episode(NumpyActor.from_file(weights), seed=7)
    assert not list(out.parent.glob("*.tmp"))


def test_obs_dim_mismatch_is_a_clear_error() -> None:
    wrong = NumpyActor.from_bytes(random_actor_bytes(obs_dim=4))
    with pytest.raises(ValueError, match="obs_dim=4"):
        render_episode_gif(wrong, max_steps=SHORT)
    with pytest.raises(ValueError, match="obs_dim=4"):
        run_episode(wrong, max_steps=SHORT)


@pytest.mark.parametrize("kwargs", [{"fps": 0}, {"max_steps": 0}, {"size": 4}, {"frame_every": 0}])
def test_bad_arguments_are_rejected(actor: NumpyActor, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        render_episode(actor, **kwargs)  # type: ignore[arg-type]


def test_gif_for_weights_renders_the_policy_with_the_seed() -> None:
    weights = random_actor_bytes(seed=5)
    first = episode_gif_for_weights(weights, seed=0)
    assert first.startswith(b"GIF89a")
    other_seed = episode_gif_for_weights(weights, seed=1)
    assert other_seed != first
    assert read_gif_comment(other_seed)["seed"] == "1"
    with pytest.raises(WeightsFormatError):
        episode_gif_for_weights(b"not an actor file")


def test_missing_gymnasium_is_a_clear_error(actor: NumpyActor, monkeypatch: pytest.MonkeyPatch) -> None:
    assert rendering_available()
    # None in sys.modules makes `import gymnasium` fail, as in an API image built without it.
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    with pytest.raises(RenderUnavailableError, match="gymnasium"):
        render_episode_gif(actor, max_steps=SHORT)


def test_rendering_never_imports_torch(tmp_path: Path) -> None:
    # A fresh interpreter: this test process may have torch loaded by other tests.
    weights = tmp_path / "actor.safetensors"
    weights.write_bytes(random_actor_bytes())
    script = textwrap.dedent(
        f"""
        import sys
        import models.episode_gif
        lazy = [m for m in ("gymnasium", "PIL", "pygame") if m in sys.modules]
        assert not lazy, f"importing models.episode_gif loaded {{lazy}}"
        from models.policy import NumpyActor
        gif = models.episode_gif.render_episode_gif(NumpyActor.from_file({str(weights)!r}), max_steps=4)
        assert gif.startswith(b"GIF89a")
        assert "pygame" in sys.modules, "expected gymnasium's pygame renderer to have run"
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not loaded, loaded
        """
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    # The CLI writes results to stdout; pygame's banner must not end up there.
    assert "pygame" not in result.stdout


def test_a_general_policy_renders_its_episode() -> None:
    # A PPO-like policy (tanh hidden layers, clip output) with observation normalization, from its file's bytes.
    weights = random_policy_weights(
        6, sizes=(3, 32, 32, 1), activations=["tanh", "tanh"], output="clip", normalized=True
    )
    data = encode_policy(weights)
    gif = episode_gif_for_weights(data, seed=2)
    assert gif.startswith(b"GIF89a")
    assert float(read_gif_comment(gif)["return"]) == run_episode(NumpyActor.from_bytes(data), seed=2)


@pytest.mark.parametrize("env_id", ["client/arm", ""])
def test_a_policy_whose_environment_lives_with_its_clients_has_no_episode_here(env_id: str) -> None:
    weights = make_random_actor(0, config={"preset": "test"}, env_id=env_id)
    with pytest.raises(ValueError, match="lives with its clients"):
        episode_gif_for_weights(weights)
    with pytest.raises(ValueError, match="lives with its clients"):
        run_episode(NumpyActor.from_bytes(weights), max_steps=SHORT)
