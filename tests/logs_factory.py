"""Small, valid schema-v1 logs for tests (deterministic under a seed)."""

from __future__ import annotations

import numpy as np
import pandas as pd

TASKS = ("click", "longview", "like")


def make_logs(
    n_users: int = 4,
    sessions_per_user: int = 2,
    requests_per_session: int = 3,
    items_per_request: int = 4,
    seed: int = 0,
    tasks: tuple[str, ...] = TASKS,
    behavior_logp: bool = True,
) -> pd.DataFrame:
    """Impression logs with ``u_activity``, ``pred_*``, ``w_*``, feedback and ``watch_time``.

    Each user's sessions are an hour apart; requests within a session are 20 s apart.
    """
    rng = np.random.default_rng(seed)
    rows = []
    req = 0
    for u in range(n_users):
        u_act = float(np.round(rng.normal(), 3))
        for s in range(sessions_per_user):
            n_req = int(rng.integers(1, requests_per_session + 1))
            t0 = 1_700_000_000_000 + u * 10_000_000 + s * 3_600_000
            for r in range(n_req):
                w = np.round(rng.uniform(0.2, 2.0, size=len(tasks)), 3)
                logp = float(np.round(rng.normal(-2.0, 0.5), 4))
                for p in range(items_per_request):
                    row: dict[str, object] = {
                        "user_id": 100 + u,
                        "session_id": f"s{u}-{s}",
                        "request_id": req,
                        "ts": t0 + r * 20_000,
                        "item_id": int(rng.integers(0, 50)),
                        "position": p,
                        "u_activity": u_act,
                    }
                    for k, t in enumerate(tasks):
                        row[f"pred_{t}"] = float(np.round(rng.uniform(0, 1), 4))
                        row[f"w_{t}"] = float(w[k])
                    if behavior_logp:
                        row["behavior_logp"] = logp
                    row["click"] = int(rng.random() < 0.4)
                    row["longview"] = int(rng.random() < 0.2)
                    row["like"] = int(rng.random() < 0.1)
                    row["watch_time"] = float(np.round(rng.exponential(8.0), 2))
                    rows.append(row)
                req += 1
    return pd.DataFrame(rows)
