"""The episode rules: turns, the turn limit, costs, legal actions, observations."""

from __future__ import annotations

import numpy as np
import pytest

from xrouter.core.errors import ConfigError
from xrouter.orchestrator import episode as ep
from xrouter.orchestrator.reward import RewardConfig, reward

# Three pool models; costs are USD per call of each model on each of two items.
COST = np.array([[0.001, 0.01, 0.1], [0.002, 0.02, 0.2]])
RESPONSES = ep.Responses(
    cost=COST,
    output_tokens=np.array([[10, 100, 1000], [20, 200, 2000]]),
    answer_code=np.array([[0, 0, 1], [-1, 0, 0]]),
)
CALL = [1, 2, 3]  # call model j
SELECT = [4, 5, 6]  # select model j's response


def fresh(n: int = 2, self_model: int = 2) -> ep.EpisodeState:
    offered = np.ones((n, 3), dtype=bool)
    return ep.start(offered, np.full(n, self_model))


def act(state: ep.EpisodeState, *actions: int, turns: int = 4) -> ep.EpisodeState:
    return ep.step(state, np.array(actions), ep.EpisodeRules(turns))


def test_call_then_select_returns_that_response_and_charges_the_call() -> None:
    state = act(fresh(), CALL[0], CALL[1])
    assert not state.done.any()
    state = act(state, SELECT[0], SELECT[1])
    assert state.done.all() and state.chosen.tolist() == [0, 1]
    assert ep.spent(state, RESPONSES).tolist() == [0.001, 0.02]


def test_cost_includes_every_call_not_only_the_selected_one() -> None:
    state = act(fresh(), CALL[0], CALL[0])
    state = act(state, CALL[2], CALL[1])
    state = act(state, SELECT[0], SELECT[0])
    assert state.chosen.tolist() == [0, 0]
    assert ep.spent(state, RESPONSES) == pytest.approx([0.101, 0.022])


def test_the_turn_limit_returns_the_last_response() -> None:
    state = act(fresh(), CALL[0], CALL[1], turns=2)
    state = act(state, CALL[2], CALL[0], turns=2)
    assert state.done.all() and state.by_limit.all()
    assert state.chosen.tolist() == [2, 0]
    assert ep.spent(state, RESPONSES) == pytest.approx([0.101, 0.022])
    assert not ep.legal_actions(state).any()


def test_a_select_of_a_call_that_never_ran_is_impossible() -> None:
    state = act(fresh(), CALL[0], CALL[0])
    legal = ep.legal_actions(state)
    assert legal[:, SELECT[0]].all() and not legal[:, SELECT[1:]].any()
    with pytest.raises(ValueError, match="episode 1 took action 5, which is not legal"):
        act(state, SELECT[0], SELECT[1])
    with pytest.raises(ValueError, match="episode 0 took action 1, which is not legal"):
        act(state, CALL[0], CALL[1])


def test_models_not_offered_cannot_be_called() -> None:
    state = ep.start(np.array([[True, False, True]]), np.array([-1]))
    legal = ep.legal_actions(state)
    assert legal[0].tolist() == [False, True, False, True, False, False, False]


def test_answering_itself_ends_the_episode_at_the_self_models_cost() -> None:
    state = act(fresh(self_model=1), CALL[0], ep.ANSWER)
    assert state.done.tolist() == [False, True]
    assert state.chosen[1] == 1 and state.answered[1]
    assert ep.spent(state, RESPONSES)[1] == 0.02
    # Once its own model was called as a pool model, it selects instead.
    state = act(fresh(self_model=1), CALL[1], CALL[1])
    assert not ep.legal_actions(state)[:, ep.ANSWER].any()


def test_without_a_self_model_the_router_cannot_answer() -> None:
    assert not ep.legal_actions(fresh(self_model=-1))[:, ep.ANSWER].any()


def test_observations_show_only_what_came_back() -> None:
    state = act(fresh(), CALL[0], CALL[0])
    seen = ep.observe(state, RESPONSES)
    assert seen[:, 1:].sum() == 0  # nothing of models not called
    assert seen[0, 0].tolist() == pytest.approx([1, 1, 0, np.log1p(10) / 8])
    assert seen[1, 0, 1] == 0  # no answer could be extracted
    state = act(state, CALL[1], CALL[1])
    seen = ep.observe(state, RESPONSES)
    assert seen[0, :2, 2].tolist() == [1.0, 1.0]  # both answered "0"
    assert seen[1, :2, 2].tolist() == [0.0, 0.0]  # a missing answer agrees with none


def test_batch_reward_is_the_foundation_reward() -> None:
    config = RewardConfig()
    score = np.array([1.0, 0.0, 1.0, 0.5])
    cost = np.array([0.001, 0.001, 0.5, 0.01])
    lam = np.array([2.0, 2.0, 1e4, 30.0])
    expected = [
        reward(s, c, RewardConfig(lam=la))
        for s, c, la in zip(score, cost, lam, strict=True)
    ]
    assert ep.batch_reward(score, cost, lam, config) == pytest.approx(expected)


def test_answer_codes_number_equal_answers_alike() -> None:
    extracted = np.array([["7", None, "7", "8"], [None, None, "x", "x"]], dtype=object)
    assert ep.answer_codes(extracted).tolist() == [[0, -1, 0, 1], [-1, -1, 0, 0]]


def test_a_turn_limit_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="an episode needs max_turns >= 1, got 0"):
        ep.EpisodeRules(0)
