"""One seeding function, so that the same seed and config give the same weights on the same machine."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> np.random.Generator:
    """Seed every global RNG the trainer touches and return the generator the trainer draws from.

    The returned generator drives noise, replay sampling and random warm-up actions; the global
    seeds cover torch's weight initialisation and any library that still uses the legacy RNGs.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)
