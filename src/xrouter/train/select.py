"""Model selection on the dev split: the AIQ of the network's lambda curve.

Training keeps the weights whose curve, swept over lambda on each suite's dev
items, has the best mean AIQ (the evaluation's headline metric, over the range of
the suite's single models' costs). Test items are never read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xrouter.evaluate.metrics import aiq
from xrouter.orchestrator import episode as ep
from xrouter.policies.learned import lambda_knobs, route_rows
from xrouter.policies.router_net import RouterNet
from xrouter.train.env import TrainingData

__all__ = ["dev_aiq"]


def dev_aiq(
    net: RouterNet, data: TrainingData, lams: Sequence[float] | None = None
) -> dict[str, float]:
    """``dev/aiq/<suite>`` for each suite with dev items, and their mean."""
    config = net.config
    lams = lams or lambda_knobs((config.lam_min, config.lam_max), 2.0)[::2]
    suites = [k for k, rows in enumerate(data.dev) if len(rows)]
    if not suites:
        return {}
    rows = np.concatenate([data.dev[k] for k in suites])
    table = data.table
    score = np.zeros((len(lams), len(rows)))
    cost = np.zeros((len(lams), len(rows)))
    for n, lam in enumerate(lams):
        played = route_rows(net, table, data.models, rows, lam)
        score[n] = table.score[rows, played.state.chosen]
        cost[n] = ep.spent(
            played.state, table.inputs(rows, np.full(len(rows), lam)).responses
        )
    out = {}
    for k in suites:
        mine = np.isin(rows, data.dev[k])
        width = int(table.valid[data.dev[k][0]].sum())
        singles = table.cost[data.dev[k], :width].mean(axis=0) * 1000
        out[f"dev/aiq/{data.suites[k].name}"] = aiq(
            cost[:, mine].mean(axis=1) * 1000,
            score[:, mine].mean(axis=1),
            (float(singles.min()), float(singles.max())),
        )
    out["dev/aiq_mean"] = float(np.mean(list(out.values())))
    return out
