"""Tests that need what a fresh machine may lack skip, saying what and how to get it,
instead of erroring: a Python built with lzma (the .tar.xz releases the builders
read and the tests make). ``./dev test`` names what is missing before the run; the
openssl command is the ``certificate`` fixture's own skip.

Only where lzma is missing, a test module that cannot be imported for want of it,
or a test that fails for want of it (``tarfile.CompressionError``), is reported as
skipped with the reason; everywhere else this plugin changes nothing.
"""

from __future__ import annotations

import tarfile
from collections.abc import Generator
from typing import Any

import pytest

try:
    import lzma  # noqa: F401
except ImportError:
    HAS_LZMA = False
else:
    HAS_LZMA = True

NO_LZMA = (
    "this Python has no lzma, which .tar.xz archives need (a Python built without "
    "liblzma-dev: use the system's python3, see ./dev main's message)"
)


def _for_want_of_lzma(error: BaseException) -> bool:
    if isinstance(error, ImportError):
        return error.name in ("lzma", "_lzma")
    return isinstance(error, tarfile.CompressionError) and "lzma" in str(error)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if HAS_LZMA or not report.failed or not isinstance(collector, pytest.Module):
        return
    # The module's import failed: find out whether lzma was the reason.
    try:
        collector.obj  # noqa: B018
    except pytest.Collector.CollectError as exc:
        cause: BaseException = exc.__cause__ or exc
    except BaseException as exc:  # noqa: BLE001
        cause = exc
    else:
        return
    while cause.__cause__ is not None and not _for_want_of_lzma(cause):
        cause = cause.__cause__
    if _for_want_of_lzma(cause):
        report.outcome = "skipped"
        report.longrepr = (str(collector.path), 0, f"Skipped: {NO_LZMA}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if HAS_LZMA or call.excinfo is None or not report.failed:
        return
    error: BaseException | None = call.excinfo.value
    while error is not None and not _for_want_of_lzma(error):
        error = error.__cause__ or error.__context__
    if error is not None:
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {NO_LZMA}")
