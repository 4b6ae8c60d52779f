"""Tests of client.reflector_types: how the gateway's refusals map to what the app sees."""

from __future__ import annotations

import pytest

from client.reflector_types import Refusal, refusal_for


@pytest.mark.parametrize(("status", "proxy_status", "refusal"), [
    (502, "tunnelgate; error=connection_refused", Refusal.REFUSED),
    (502, 'tunnelgate; error=destination_ip_unroutable; details="no route"', Refusal.NET_UNREACHABLE),
    (403, 'tunnelgate; error=destination_ip_prohibited; details="policy"', Refusal.PROHIBITED),
    (502, 'tunnelgate; error=destination_unavailable; details="not connection_refused"',
     Refusal.HOST_UNREACHABLE),
    (504, 'tunnelgate; error=connection_timeout; details="x; error=connection_refused"',
     Refusal.HOST_UNREACHABLE),
    (401, "", Refusal.PROHIBITED),
    (502, "garbage", Refusal.HOST_UNREACHABLE),
])
def test_refusal_follows_the_error_parameter_not_words_in_the_details(status, proxy_status, refusal):
    """The app sees what the gateway's RFC 9209 error names; text in the details never counts."""
    assert refusal_for(status, proxy_status) is refusal
