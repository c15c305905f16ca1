"""A torch reference of a general policy (models.policy_format), built layer by layer from its weights."""

import numpy as np
import torch
from torch import nn

from models.policy_types import LEAKY_RELU_SLOPE, Activation, ActorWeights, OutputTransform

_MODULES = {
    Activation.RELU: nn.ReLU,
    Activation.TANH: nn.Tanh,
    Activation.ELU: nn.ELU,
    Activation.LEAKY_RELU: lambda: nn.LeakyReLU(LEAKY_RELU_SLOPE),
}


def torch_network(weights: ActorWeights) -> nn.Sequential:
    modules: list[nn.Module] = []
    for layer in weights.layers:
        linear = nn.Linear(layer.in_features, layer.out_features)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(layer.weight))
            linear.bias.copy_(torch.from_numpy(layer.bias))
        modules.append(linear)
        if layer.activation is not None:
            modules.append(_MODULES[Activation(layer.activation)]())
    return nn.Sequential(*modules)


def torch_actions(weights: ActorWeights, observations: np.ndarray) -> np.ndarray:
    """What SB3 / CleanRL would serve: normalize as VecNormalize does, the network, then the output transform."""
    x = torch.from_numpy(np.asarray(observations, np.float64))
    norm = weights.obs_normalization
    if norm is not None:
        x = (x - torch.from_numpy(norm.mean.astype(np.float64))) / torch.sqrt(
            torch.from_numpy(norm.var.astype(np.float64)) + norm.epsilon
        )
        if norm.clip is not None:
            x = torch.clamp(x, -norm.clip, norm.clip)
    with torch.no_grad():
        y = torch_network(weights)(x.float()).double()
    low = torch.from_numpy(weights.action_low.astype(np.float64))
    high = torch.from_numpy(weights.action_high.astype(np.float64))
    if weights.output == OutputTransform.TANH_SCALE:
        y = low + (torch.tanh(y) + 1.0) / 2.0 * (high - low)
    return torch.clamp(y, low, high).numpy()
