"""Named crash points for tests, enabled only by a test setting.

``CONDPAY_FAULT_POINTS="after_commit_before_reply=0.05,deadline_sweep=0.2"`` (and optionally
``CONDPAY_FAULT_SEED``) makes the server process die abruptly (``os._exit``, no cleanup, as a
SIGKILL would) when it passes a named point, with the given probability. Unset, every point is a
no-op. The points:

- ``after_commit_before_reply``: a batch committed; no caller has its answer yet;
- ``after_lock_commit``: a batch that locked a payment committed (before any attestation for it);
- ``deadline_sweep``: the deadline sweep found due payments or loans and has not fired them yet;
- ``loan_default``: a batch that fired a loan's deadline committed (the default is durable;
  nothing of the collateral's disposal has happened yet);
- ``pvp_before_prepare``: a settlement's core legs are held; the bridge has not been asked;
- ``pvp_before_decision``: the bridge's leg is prepared; no decision is recorded (at market:
  the core has recorded nothing yet, docs/settlement.md);
- ``pvp_after_decision``: the decision is recorded; no leg is committed;
- ``pvp_between_commits``: the bridge's leg is committed; the core's is not.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Mapping
from typing import Final

CRASH_EXIT_STATUS: Final = 86
POINTS: Final = frozenset(
    {
        "after_commit_before_reply",
        "after_lock_commit",
        "deadline_sweep",
        "loan_default",
        "pvp_before_prepare",
        "pvp_before_decision",
        "pvp_after_decision",
        "pvp_between_commits",
    }
)


class Faults:
    def __init__(self, probabilities: Mapping[str, float], seed: int) -> None:
        unknown = set(probabilities) - POINTS
        if unknown:
            raise ValueError(f"unknown fault points: {sorted(unknown)}; known: {sorted(POINTS)}")
        self._probabilities = dict(probabilities)
        self._random = random.Random(seed)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Faults:
        env = os.environ if env is None else env
        spec = env.get("CONDPAY_FAULT_POINTS", "")
        probabilities = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, _, value = item.partition("=")
            probabilities[name] = float(value or "1")
        return cls(probabilities, int(env.get("CONDPAY_FAULT_SEED", "0")))

    @property
    def enabled(self) -> bool:
        return bool(self._probabilities)

    def point(self, name: str) -> None:
        probability = self._probabilities.get(name)
        if probability and self._random.random() < probability:
            print(f"condpay: fault point {name}: crashing", file=sys.stderr, flush=True)
            os._exit(CRASH_EXIT_STATUS)


NO_FAULTS: Final = Faults({}, 0)
