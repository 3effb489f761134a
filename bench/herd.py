"""1,000 nodes waiting for a Manager that comes back after 5 minutes:
``python -m bench.herd [--nodes N] [--outage S] [--seed N]``.

A simulation, in virtual time, of every node retrying with the agent's own backoff
(``node_agent.manager.wait.backoff``: full jitter, window doubling from 1 s up to the
60 s cap). Prints the requests per second the Manager sees once it is back (peak
against average) and how long until every node got through, against the cap.
Baseline in the same run: the same nodes retrying every 5 s in lockstep, as a fixed
retry loop (the v3 worker's own sign-on retry) would.
"""

from __future__ import annotations

import argparse
import heapq
import random
from collections import Counter
from dataclasses import dataclass

from node_agent.common.retry import attempt_state, backoff


@dataclass(frozen=True)
class Outcome:
    """What the Manager saw after coming back."""

    peak_rps: int
    mean_rps: float
    last_through: float  # seconds after the Manager came back
    requests: int


def simulate(nodes: int, outage: float, cap: float, fixed: float = 0.0) -> Outcome:
    """Every node tries at t=0; a try before ``outage`` fails and the node waits per
    the backoff (or ``fixed`` seconds when set); the first try after gets through."""
    wait = backoff(cap)
    queue = [(0.0, node, 1) for node in range(nodes)]
    heapq.heapify(queue)
    seen: Counter[int] = Counter()
    last = 0.0
    while queue:
        when, node, attempt = heapq.heappop(queue)
        if when >= outage:
            seen[int(when - outage)] += 1
            last = max(last, when - outage)
            continue
        delay = fixed or wait(attempt_state(attempt))
        heapq.heappush(queue, (when + delay, node, attempt + 1))
    span = max(seen) + 1
    return Outcome(
        peak_rps=max(seen.values()),
        mean_rps=nodes / span,
        last_through=last,
        requests=sum(seen.values()),
    )


def main() -> None:
    """Run both policies and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--outage", type=float, default=300.0)
    parser.add_argument("--cap", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    random.seed(args.seed)  # tenacity's jitter uses the random module
    ours = simulate(args.nodes, args.outage, args.cap)
    fixed = simulate(args.nodes, args.outage, args.cap, fixed=5.0)
    print(f"{args.nodes} nodes, Manager back after {args.outage:.0f} s, cap {args.cap:.0f} s")
    print(
        f"{'policy':<32} {'peak req/s':>10} {'mean req/s':>10} {'peak/mean':>9} "
        f"{'all through after':>17}"
    )
    for name, o in (
        ("node-agent (full jitter, capped)", ours),
        ("baseline: fixed 5 s, lockstep", fixed),
    ):
        print(
            f"{name:<32} {o.peak_rps:>10} {o.mean_rps:>10.1f} {o.peak_rps / o.mean_rps:>9.1f} "
            f"{o.last_through:>15.1f} s"
        )


if __name__ == "__main__":
    main()
