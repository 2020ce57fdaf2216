"""The router network's forward pass in numpy, for one live decision at a time.

A live request is one row: a handful of candidates and matrices of 128 x 27 at
most. Torch spends most of such a pass dispatching its ten-odd modules (about
0.35 ms on two cores); numpy does the same arithmetic in about a quarter of
that. ``FrozenNet`` copies a trained ``RouterNet``'s weights once and computes
its logits with the same formula (``RouterNet.heads``), in float32, for every
configuration the network has (shaped or not, reading the prompt or not).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from xrouter.policies.router_net import RouterNet

__all__ = ["FrozenNet"]

_Array = NDArray[np.float32]


class _Linear:
    """A copy of an ``nn.Linear``'s weight (transposed) and bias."""

    def __init__(self, layer: nn.Module) -> None:
        assert isinstance(layer, nn.Linear)
        self.weight: _Array = layer.weight.detach().numpy().T.copy()
        self.bias: _Array = layer.bias.detach().numpy().copy()

    def __call__(self, x: _Array) -> _Array:
        result: _Array = x @ self.weight + self.bias
        return result


def _relu(x: _Array) -> _Array:
    return np.maximum(x, np.float32(0))


class FrozenNet:
    """The logits of a ``RouterNet`` as it is now (later training of the net does
    not reach the copy)."""

    def __init__(self, net: RouterNet) -> None:
        self.config = net.config
        self.state = _Linear(net.state)
        self.candidate = _Linear(net.candidate)
        self.model_embedding: _Array = (
            net.model_embedding.weight.detach().numpy().copy()
        )
        self.prompt = (
            None
            if net.prompt is None
            else (_Linear(net.prompt[0]), _Linear(net.prompt[2]))
        )
        self.head = _Linear(net.head[1])
        self.out = _Linear(net.out)
        self.residual = (_Linear(net.residual[1]), _Linear(net.residual[3]))
        with torch.no_grad():
            self.tau = np.float32(float(nn.functional.softplus(net.sharpness) * 4))

    def __call__(
        self,
        embedding: _Array,  # [n, 384]
        state_x: _Array,  # [n, 8]
        cand_x: _Array,  # [n, A, 27]; last two: prior, penalty
        cand_model: NDArray[np.int64],  # [n, A]
        legal: NDArray[np.bool_],  # [n, A]
    ) -> _Array:
        """Masked logits ``[n, A]``; illegal actions get -inf."""
        s = self.state(state_x)
        c = self.candidate(cand_x) + self.model_embedding[cand_model]
        request = s
        if self.prompt is not None:
            first, second = self.prompt
            request = second(_relu(first(embedding))) + s
        out = self.out(_relu(self.head(_relu(request[:, None, :] + c))))[..., 0]
        if not self.config.shaped:
            return np.where(legal, out, np.float32(-math.inf))
        right = cand_x[..., -2] + out
        chance = 1 / (1 + np.exp(-right))
        payoff = chance * (np.float32(self.config.k) - cand_x[..., -1])
        hidden, last = self.residual
        residual = last(_relu(hidden(_relu(s[:, None, :] + c))))[..., 0]
        logits: _Array = self.tau * payoff + residual
        return np.where(legal, logits, np.float32(-math.inf))
