"""Tests of gateway_stub.cli."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway_stub.certs import fingerprint_sha256
from gateway_stub.cli import PROG, main
from gateway_stub.passwords import hash_password, verify_password
from tests.support import write_gateway, write_small_config

ROOT = Path(__file__).resolve().parents[2]
HASH = hash_password("pw", salt=b"saltsalt", n=16, r=1, p=1)


def _run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway_stub.cli", *args],
        input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )


def _config(tmp_path: Path, extra: str = "") -> Path:
    return write_small_config(tmp_path, HASH, extra)


def test_hash_password_reads_one_line_from_stdin():
    """hash-password hashes stdin's first line without its newline."""
    result = _run("hash-password", stdin="correct horse\n")
    assert result.returncode == 0, result.stderr
    encoded = result.stdout.strip()
    assert encoded.startswith("scrypt:16384:8:1:")
    assert verify_password("correct horse", encoded)
    assert "correct horse" not in result.stdout + result.stderr


def test_hash_password_refuses_empty_input():
    """An empty password is an error, not a hash of nothing."""
    result = _run("hash-password", stdin="\n")
    assert result.returncode == 2
    assert result.stderr.strip() == "tunnelgate-gateway: empty password"


def test_check_config_good_file_prints_summary(tmp_path):
    """check-config on a valid file exits 0 and summarises it."""
    result = _run("check-config", "--config", str(_config(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "listen: [::]:8443" in result.stdout
    assert "alice [staff]: may reach intranet-web" in result.stdout


def test_check_config_warns_of_a_dns_server_a_user_may_not_reach(tmp_path):
    """A pushed DNS server outside a user's UDP 53 policy is named: it would not be pushed to them."""
    dns = '\n[dns]\nservers = ["10.77.0.53"]\nsearch = ["corp.example"]\n'
    result = _run("check-config", "--config", str(_config(tmp_path, dns)))
    assert result.returncode == 0, result.stderr
    assert ("warning: no policy lets alice reach DNS server 10.77.0.53 on udp 53; it is not pushed to them"
            in result.stdout)


def test_check_config_shows_exclude_and_warns_of_one_that_cuts_no_route(tmp_path):
    """check-config lists the split-exclude networks and names one that overlaps no resource."""
    routing = '\n[routing]\nexclude = ["10.77.0.128/25", "192.168.0.0/16"]\n'
    result = _run("check-config", "--config", str(_config(tmp_path, routing)))
    assert result.returncode == 0, result.stderr
    assert "kept out of the tunnel: 10.77.0.128/25, 192.168.0.0/16" in result.stdout
    assert "warning: routing.exclude 192.168.0.0/16 overlaps no resource" in result.stdout
    assert "routing.exclude 10.77.0.128/25" not in result.stdout


def test_check_config_bad_file_exits_2_with_one_line(tmp_path):
    """check-config on a broken file prints one clear line and exits 2."""
    path = _config(tmp_path, '\n[[policy]]\ngroups = ["staff"]\nallow = ["printer"]\n')
    result = _run("check-config", "--config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"tunnelgate-gateway: {path}: policy[1].allow[0]: ")
    assert 'unknown resource "printer"' in lines[0]


def test_run_with_bad_config_exits_2(tmp_path, capsys):
    """Running the gateway with a broken config fails before any server starts."""
    path = _config(tmp_path, "bogus = 1\n")
    assert main(["--config", str(path)]) == 2
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'bogus'" in err


def test_no_arguments_is_a_usage_error(capsys):
    """Without --config or a command the tool explains itself and exits 2."""
    assert main([]) == 2
    assert "give --config FILE or a command" in capsys.readouterr().err


def test_make_cert_prints_paths_and_fingerprint(tmp_path, capsys):
    """make-cert writes the files and prints the server certificate's fingerprint."""
    assert main(["make-cert", "--out", str(tmp_path / "tls"), "--host", "localhost",
                 "--host", "127.0.0.1"]) == 0
    out = capsys.readouterr().out
    fingerprint = fingerprint_sha256((tmp_path / "tls" / "gateway.crt").read_bytes())
    assert f"fingerprint:    {fingerprint}" in out
    assert str(tmp_path / "tls" / "gateway.key") in out
    assert main(["make-cert", "--out", str(tmp_path / "tls"), "--host", "localhost"]) == 1
    assert "--force" in capsys.readouterr().err


def test_run_with_tls_files_or_audit_log_that_do_not_load_exits_2_naming_the_key(tmp_path, capsys):
    """A certificate that is no certificate, a key of another certificate and an audit log
    that cannot be opened each stop the gateway with one line naming the file and the key,
    not a bare OpenSSL or OS message."""
    from gateway_stub.certs import make_self_signed

    setup = write_gateway(tmp_path, listen="127.0.0.1:0", hosts=["127.0.0.1"],
                          allowed_networks=["127.0.0.0/8"])
    prefix = f"{PROG}: {setup.config}: "
    key, good_key = setup.certs.private_key, setup.certs.private_key.read_bytes()
    key.write_bytes(make_self_signed(tmp_path / "other", ["127.0.0.1"]).private_key.read_bytes())
    assert main(["--config", str(setup.config)]) == 2
    assert capsys.readouterr().err.startswith(prefix + "server.private_key: ")
    key.write_bytes(good_key)
    setup.certs.certificate.write_text("not a certificate")
    assert main(["--config", str(setup.config)]) == 2
    assert capsys.readouterr().err.startswith(prefix + "server.certificate: ")
    (tmp_path / "audit.log").unlink()           # the runs above created it
    (tmp_path / "audit.log").mkdir()
    assert main(["--config", str(setup.config)]) == 2
    assert capsys.readouterr().err.startswith(prefix + "server.audit_log: cannot open")


def test_the_gateway_raises_its_open_files_limit_to_the_hard_limit():
    """Every flow holds a socket; a soft limit of 1024 would let one user's flows stop the
    gateway accepting anyone else, so the gateway takes all the hard limit allows."""
    import resource
    from gateway_stub.cli import raise_fd_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard) - 1, hard))
    try:
        assert raise_fd_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
