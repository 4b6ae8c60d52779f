"""gateway_stub.targets: what a tunnel request names, and the proxy-status header."""

from __future__ import annotations

import errno
import re

import pytest

from gateway_stub.targets import connect_failure, parse_authority, proxy_status_header


@pytest.mark.parametrize("text", ["", "10.0.0.1", "10.0.0.1:0", "10.0.0.1:70000", "host:80",
                                  "[::1]:80", ":80", "10.0.0.1:8a", "10.0.0.1:\uff18\uff10"])
def test_malformed_authorities_are_rejected(text):
    """Anything but an IPv4 literal with a port in 1-65535 is refused with ValueError."""
    with pytest.raises(ValueError):
        parse_authority(text)


@pytest.mark.parametrize("detail", ['authority \'x"; error=connection_refused\' is not host:port',
                                    'user o"brien\\ may not', "caf\u00e9\x01"])
def test_proxy_status_details_stay_one_valid_string(detail):
    """Quotes, backslashes and non-ASCII from the client or the config cannot break out of
    the details string or make the header invalid (RFC 8941 sf-string)."""
    name, value = proxy_status_header("http_request_error", detail)
    match = re.fullmatch(r'tunnelgate; error=http_request_error; details="((?:[ !#-\[\]-~]|\\["\\])*)"', value)
    assert match, value
    assert re.sub(r'\\(["\\])', r"\1", match.group(1)) == "".join(
        c if " " <= c <= "~" else "?" for c in detail)


@pytest.mark.parametrize(("exc", "answer"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), (502, "connection_refused")),
    (TimeoutError(), (504, "connection_timeout")),
    (OSError(errno.ENETUNREACH, "no route"), (502, "destination_ip_unroutable")),
    (OSError(errno.EADDRNOTAVAIL, "no source"), (502, "destination_ip_unroutable")),
    # A host that does not answer on a routed network: the app must see host unreachable.
    (OSError(errno.EHOSTUNREACH, "no host"), (502, "destination_unavailable")),
    (OSError(errno.EIO, "other"), (502, "destination_unavailable")),
])
def test_connect_failures_map_to_what_the_app_should_see(exc, answer):
    assert connect_failure(exc) == answer
