from __future__ import annotations

import pytest

from xrouter.core.errors import ConfigError
from xrouter.core.types import CallRecord, Trace, Usage
from xrouter.orchestrator.reward import RewardConfig, episode_reward, reward


def test_wrong_answer_earns_nothing_however_cheap() -> None:
    assert reward(0.0, 0.0) == 0.0
    assert reward(0.0, 5.0) == 0.0


def test_right_answer_earns_k_less_the_cost_penalty() -> None:
    # gpt-4o-mini on a 200-token prompt with a 300-token answer: 0.00021 USD.
    cost = 200 * 0.15e-6 + 300 * 0.60e-6
    assert reward(1.0, cost) == pytest.approx(1.0 - 2.0 * 0.00021, rel=1e-12)


def test_cost_penalty_is_capped_at_cost_max() -> None:
    assert reward(1.0, 10.0) == pytest.approx(0.4)
    assert reward(1.0, 10.0, RewardConfig(k=2.0, lam=1.0, cost_max=1.5)) == 0.5


def test_partial_scores_scale_the_reward() -> None:
    assert reward(0.5, 0.1, RewardConfig(lam=1.0)) == pytest.approx(0.45)


def test_episode_reward_charges_every_call_including_the_router() -> None:
    trace = Trace(
        calls=[
            CallRecord(
                "xrouter-router-7b",
                None,
                Usage(500, 40),
                500 * 0.04e-6 + 40 * 0.1e-6,
                by_router=True,
            ),
            CallRecord("gpt-5", "18", Usage(200, 100), 200 * 1.25e-6 + 100 * 10e-6),
        ]
    )
    expected_cost = 0.000024 + 0.00125
    assert trace.cost_usd == pytest.approx(expected_cost)
    assert episode_reward(1.0, trace) == pytest.approx(1.0 - 2.0 * expected_cost)


def test_bad_config_and_inputs_are_refused_with_clear_messages() -> None:
    with pytest.raises(
        ConfigError, match=r"reward lam must be a finite number >= 0, got -1.0"
    ):
        RewardConfig(lam=-1.0)
    with pytest.raises(ConfigError, match=r"cost_max \(2.0\) exceeds K \(1.0\)"):
        RewardConfig(cost_max=2.0)
    with pytest.raises(ValueError, match=r"score must lie in \[0, 1\], got 1.5"):
        reward(1.5, 0.0)
    with pytest.raises(ValueError, match="cost must be a finite number >= 0 USD"):
        reward(1.0, -0.01)
