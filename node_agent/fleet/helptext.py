"""What ``node-agent fleet ... --help`` says after the options: each command's
defaults, environment, exit codes and an example (docs/fleet.md says more)."""

from __future__ import annotations

SCALE_MIN = "never fewer Spot nodes than N (dedicated nodes are not counted)"

_ENVIRONMENT = """\
environment:
  AZURE_BATCH_ENDPOINT    the account URL (or --account-url)
  AZURE_BATCH_ACCOUNT     the account name (default: the URL's first label)
  AZURE_BATCH_ACCESS_KEY  the account key; unset: Microsoft Entra ID
                          (AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET,
                          a managed identity, az login)
  FLAMENCO_MANAGER_URL    the Manager (or --manager-url)
  REQUESTS_CA_BUNDLE      certificates to trust instead of the system's"""

_STATE = "  XDG_STATE_HOME          where {what} is kept (default: ~/.local/state)"

_EXITS = """\
exit codes:
  0  done{extra}
  1  Batch or the Manager failed or refused (the message says which call and why)
  2  usage
  3  invalid input: every problem listed at once, nothing done
  128+N  stopped by signal N{loop}"""


def _epilog(environment: str, exits: str, example: str) -> str:
    return f"{environment}\n\n{exits}\n\nexample:\n  {example}\n\ndocs/fleet.md has the details."


EPILOGS = {
    "fleet": _epilog(
        _ENVIRONMENT,
        _EXITS.format(extra="", loop=""),
        "node-agent fleet status --pool render",
    ),
    "status": _epilog(
        _ENVIRONMENT,
        _EXITS.format(
            extra="; no node needs attention\n"
            "  6  some node needs attention (failed, crash-looping, stale, unfit) or the\n"
            "     Manager did not answer: for cron and monitoring",
            loop="; --watch ends with 0 on SIGTERM or Ctrl-C",
        ),
        "node-agent fleet status --pool render --json | jq .attention",
    ),
    "prune": _epilog(
        _ENVIRONMENT,
        _EXITS.format(extra="", loop=""),
        "node-agent fleet prune --pool render --apply",
    ),
    "heal": _epilog(
        _ENVIRONMENT,
        _EXITS.format(extra="", loop=""),
        "node-agent fleet heal --pool render --apply",
    ),
    "scale": _epilog(
        _ENVIRONMENT + "\n" + _STATE.format(what="the memory of earlier rounds"),
        _EXITS.format(extra="", loop="; --every ends with 0 on SIGTERM or Ctrl-C"),
        "node-agent fleet scale --pool render --min 0 --max 40 --every 60 --apply",
    ),
    "roll": _epilog(
        _ENVIRONMENT + "\n" + _STATE.format(what="the roll under way"),
        _EXITS.format(
            extra=": every node runs the pool's packages (without --apply: the plan)",
            loop="; --apply ends with 0 on SIGTERM or Ctrl-C, and carries on when run again",
        ),
        "node-agent fleet roll --pool render --package flamenco-worker=3.9.1 --at-once 2 --apply",
    ),
}
