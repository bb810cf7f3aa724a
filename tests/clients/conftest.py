"""pytest fixtures for the real-client tests: a fresh caudal broker per test.

The Broker class and the client helpers live in caudal_harness.py (importable from
every test module, since pytest puts this directory on sys.path); they are
re-exported here so that `conftest` is the one place to look for the fixture.

Environment:
    CAUDAL_BIN        the broker binary (default: <repo>/target/debug/caudal)
    CAUDAL_KEEP_DATA  set to 1 to keep each test's temp dir under target/tmp
"""

from __future__ import annotations

import os

import pytest

from caudal_harness import Broker, BrokerError, assert_clients_work, caudal_bin, create_topic

__all__ = ["Broker", "BrokerError", "assert_clients_work", "caudal_bin", "create_topic", "broker"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On any failure (setup, call or teardown), attach the tail of each broker's log
    to the report so it is printed with the failure."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for broker in getattr(item, "_caudal_brokers", []):
            report.sections.append((f"caudal log ({report.when})", broker.log_tail()))


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "broker_args(*args): extra command-line arguments for the `broker` fixture's caudal, "
        "e.g. @pytest.mark.broker_args('--group-initial-rebalance-delay-ms', '0')",
    )


@pytest.fixture
def broker(request):
    """A running 2-shard broker on free ports with a fresh data dir, stopped (SIGTERM)
    and removed afterwards. The test fails in teardown if the broker died during it.

    Extra caudal arguments come from the test's ``broker_args`` marker (markers on the
    module or class apply too; the closest one wins)."""
    marker = request.node.get_closest_marker("broker_args")
    extra = [str(a) for a in marker.args] if marker is not None else []
    b = Broker(extra_args=extra)
    if not hasattr(request.node, "_caudal_brokers"):
        request.node._caudal_brokers = []
    request.node._caudal_brokers.append(b)
    keep = os.environ.get("CAUDAL_KEEP_DATA") == "1"
    try:
        b.start()
    except BaseException:
        b.cleanup(keep=keep)
        raise
    yield b
    b.cleanup(keep=keep)  # records crashed_returncode if the process was already gone
    if b.crashed_returncode is not None:
        # The log tail is attached to the report by pytest_runtest_makereport.
        pytest.fail(f"caudal died during the test (exit code {b.crashed_returncode})")
