"""Fixtures shared by the client's tests."""

from __future__ import annotations

import pytest

from tests.client.route_lab import NEXTHOP_NET, REMOTE_GATEWAY
from tests.lab import topology as topo


@pytest.fixture
def nexthop(lab):
    """A route in the client namespace that reaches REMOTE_GATEWAY via the lab gateway."""
    lab.run(lab.client, ["ip", "route", "add", NEXTHOP_NET, "via", str(topo.GATEWAY_OUTER)])
    yield
    lab.run(lab.client, ["ip", "route", "del", NEXTHOP_NET], check=False)
    lab.run(lab.client, ["ip", "route", "del", f"{REMOTE_GATEWAY}/32"], check=False)
