"""The files of one training run, by name: what `python -m trainer train --out DIR` writes and a tracker uploads."""

from __future__ import annotations

ACTOR_FILE = "actor.safetensors"
ONNX_FILE = "actor.onnx"
REWARDS_FILE = "rewards.csv"
EVALUATIONS_FILE = "evaluations.csv"
PLOT_FILE = "rewards.png"
CONFIG_FILE = "config.json"
GIF_FILE = "rollout.gif"
