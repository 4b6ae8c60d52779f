"""The status window and its throughput chart, fed with control-API objects."""

from __future__ import annotations

from gui.status_window import MAX_LOG_LINES, StatusWindow
from gui.throughput_chart import IN_COLOR, OUT_COLOR, ThroughputChart

STATUS = {"state": "connected", "detail": "address 10.200.0.2/24", "profile": "work",
          "gateway": "192.0.2.1:8443", "username": "alice", "address": "10.200.0.2/24",
          "networks": ["10.77.0.0/24", "10.78.0.0/16"], "resources": ["intranet-web", "wiki"],
          "dns": {"servers": ["10.77.0.53"], "search": ["corp.example"]},
          "connected_since": 1000.0, "error": None,
          "stats": {"bytes_in": 3 * 1024 * 1024, "bytes_out": 2048, "rate_in": 1024.0,
                    "rate_out": 0.0, "flows": 3}}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_status_fills_session_labels(qtbot):
    """A Status object fills gateway, address, networks, resources, DNS and traffic."""
    window = StatusWindow(clock=Clock(1000.0 + 3725))
    qtbot.addWidget(window)
    window.set_status(STATUS)
    assert window.state.text() == "connected"
    assert window.gateway.text() == "192.0.2.1:8443"
    assert window.address.text() == "10.200.0.2/24"
    assert window.networks.text() == "10.77.0.0/24, 10.78.0.0/16"
    assert window.resources.text() == "intranet-web, wiki"
    assert window.dns.text() == "10.77.0.53 (search corp.example)"
    assert window.duration.text() == "1:02:05"
    assert window.bytes_in.text().startswith("3.0 MiB")
    assert window.bytes_out.text().startswith("2.0 KiB")
    assert window.flows.text() == "3"


def test_time_connected_ticks_every_second(qtbot):
    """The time-connected label follows the clock through the window's one-second timer."""
    clock = Clock(1010.0)
    window = StatusWindow(clock=clock)
    qtbot.addWidget(window)
    window.set_status(STATUS)
    assert window.duration.text() == "0:00:10"
    clock.now = 1070.0
    qtbot.waitUntil(lambda: window.duration.text() == "0:01:10", timeout=3000)


def test_stats_notifications_update_bytes_and_chart(qtbot):
    """Each stats notification updates the byte labels and adds one chart sample."""
    clock = Clock(50.0)
    window = StatusWindow(clock=clock)
    qtbot.addWidget(window)
    window.set_status(STATUS)
    for i in range(3):
        clock.now += 1
        window.set_stats({"bytes_in": 1000 * (i + 1), "bytes_out": 10, "rate_in": 1000.0,
                          "rate_out": 10.0, "flows": 1})
    assert window.bytes_in.text() == "2.9 KiB  (1000 B/s)"
    assert window.flows.text() == "1"
    assert [s.rate_in for s in window.chart.samples()] == [1000.0] * 3


def test_disconnect_clears_session_but_keeps_log(qtbot):
    """Going back to disconnected blanks the session fields and keeps the log lines."""
    window = StatusWindow(clock=Clock(2000.0))
    qtbot.addWidget(window)
    window.set_status(STATUS)
    window.append_log({"time": 1000.0, "level": "INFO", "message": "connected"})
    window.set_status({"state": "disconnected", "detail": "", "stats": {}})
    assert window.address.text() == "—" and window.duration.text() == "—"
    assert "connected" in window.log.toPlainText()


def test_failed_state_shows_the_reason(qtbot):
    """A failed Status shows its error next to the state."""
    window = StatusWindow()
    qtbot.addWidget(window)
    window.set_status({"state": "failed", "error": "login failed: wrong password", "stats": {}})
    assert window.state.text() == "failed"
    assert window.detail.text() == "login failed: wrong password"


def test_log_view_is_bounded(qtbot):
    """The log view keeps only the newest MAX_LOG_LINES lines."""
    window = StatusWindow()
    qtbot.addWidget(window)
    for i in range(MAX_LOG_LINES + 50):
        window.append_log({"time": 0.0, "level": "INFO", "message": f"line {i}"})
    assert window.log.document().blockCount() == MAX_LOG_LINES
    assert window.log.toPlainText().splitlines()[-1].endswith(f"line {MAX_LOG_LINES + 49}")


def test_chart_keeps_only_the_last_minute(qtbot):
    """Samples older than the 60 s window are dropped; the peak covers both directions."""
    chart = ThroughputChart()
    qtbot.addWidget(chart)
    for t in range(0, 120):
        chart.add_sample(float(t), rate_in=t * 10.0, rate_out=5.0)
    times = [s.time for s in chart.samples()]
    assert times[0] == 59.0 and times[-1] == 119.0
    assert chart.peak() == 1190.0


def test_chart_paints_with_and_without_samples(qtbot):
    """The chart renders empty, with one sample and with many (negative rates clamp to 0); the lines
    of both directions show in the plot only once there are two samples."""
    chart = ThroughputChart()
    qtbot.addWidget(chart)
    chart.resize(400, 150)
    chart.add_sample(0.0, -5.0, 1.0)
    assert chart.samples()[0].rate_in == 0.0
    assert _plot_colors(chart) & {IN_COLOR.rgb(), OUT_COLOR.rgb()} == set()
    for t in range(1, 30):
        chart.add_sample(float(t), 100.0 * t, 40.0 * t)
    assert {IN_COLOR.rgb(), OUT_COLOR.rgb()} <= _plot_colors(chart)
    chart.clear()
    assert _plot_colors(chart) & {IN_COLOR.rgb(), OUT_COLOR.rgb()} == set()


def _plot_colors(chart: ThroughputChart) -> set[int]:
    """The colours painted inside the plot area (below the legend), as 0xAARRGGBB."""
    image = chart.grab().toImage()
    assert (image.width(), image.height()) == (chart.width(), chart.height())
    return {image.pixel(x, y) for x in range(8, image.width() - 8, 2)
            for y in range(22, image.height() - 6)}


def test_a_full_tunnel_shows_what_it_leaves_out_and_that_ipv6_is_blocked(qtbot):
    """Excluded networks follow the secured ones, and a full tunnel says IPv6 is blocked."""
    window = StatusWindow(clock=Clock(1000.0))
    qtbot.addWidget(window)
    window.set_status({**STATUS, "networks": ["0.0.0.0/0"], "excluded": ["192.168.0.0/16"],
                       "ipv6_blocked": True})
    assert window.networks.text() == "0.0.0.0/0 except 192.168.0.0/16; IPv6 blocked"
