"""The login, one-time code and certificate dialogs: fields, validation, values."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QLineEdit

from gui.cert_dialog import CertificateDialog, format_fingerprint
from gui.login_dialog import LoginDialog
from gui.otp_dialog import OtpDialog

CERT = {"id": "q1", "host": "untrusted.example:443", "subject": "CN=untrusted.example",
        "issuer": "CN=Example CA", "fingerprint": "sha256:" + "ab" * 32,
        "reason": "self-signed certificate"}


def test_login_dialog_prefills_user_and_hides_password(qtbot):
    """The user name comes from the profile and the password is masked."""
    dialog = LoginDialog("work", "https://vpn.example.com", "alice")
    qtbot.addWidget(dialog)
    assert dialog.username.text() == "alice"
    assert dialog.password.echoMode() == QLineEdit.EchoMode.Password
    assert not dialog.remember.isChecked()


def test_login_dialog_ok_needs_user_and_password(qtbot):
    """OK stays disabled until both user name and password are filled in."""
    dialog = LoginDialog("work", "https://vpn.example.com")
    qtbot.addWidget(dialog)
    assert not dialog.ok_button.isEnabled()
    qtbot.keyClicks(dialog.username, "alice")
    assert not dialog.ok_button.isEnabled()
    qtbot.keyClicks(dialog.password, "s3cret")
    assert dialog.ok_button.isEnabled()
    dialog.username.clear()
    assert not dialog.ok_button.isEnabled()


def test_login_dialog_returns_typed_credentials(qtbot):
    """Accepting returns the stripped user name, exact password and remember choice."""
    dialog = LoginDialog("work", "https://vpn.example.com")
    qtbot.addWidget(dialog)
    qtbot.keyClicks(dialog.username, "  alice ")
    qtbot.keyClicks(dialog.password, " pass word ")
    dialog.remember.setChecked(True)
    with qtbot.waitSignal(dialog.accepted, timeout=2000):
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    creds = dialog.credentials()
    assert (creds.username, creds.password, creds.remember) == ("alice", " pass word ", True)
    assert "pass word" not in repr(creds)


def test_login_dialog_refuses_to_accept_incomplete_form(qtbot):
    """accept() on an incomplete form leaves the dialog open."""
    dialog = LoginDialog("work", "https://vpn.example.com", "alice")
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.accept()
    assert dialog.isVisible() and dialog.result() != QDialog.DialogCode.Accepted


def test_otp_dialog_accepts_six_to_eight_digits(qtbot):
    """OK is enabled for 6, 7 and 8 digits and not for fewer."""
    dialog = OtpDialog("Code from your app")
    qtbot.addWidget(dialog)
    assert dialog.prompt.text() == "Code from your app"
    for text, ok in (("12345", False), ("123456", True), ("1234567", True), ("12345678", True)):
        dialog.code.setText(text)
        assert dialog.ok_button.isEnabled() is ok, text


def test_otp_dialog_types_only_digits_and_at_most_eight(qtbot):
    """Letters are refused as typed and a ninth digit is cut off."""
    dialog = OtpDialog()
    qtbot.addWidget(dialog)
    qtbot.keyClicks(dialog.code, "12ab34 5678 9")
    assert dialog.value() == "12345678"


def test_otp_dialog_returns_code_on_ok(qtbot):
    """Accepting with a valid code returns that code."""
    dialog = OtpDialog()
    qtbot.addWidget(dialog)
    qtbot.keyClicks(dialog.code, "654321")
    with qtbot.waitSignal(dialog.accepted, timeout=2000):
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert dialog.value() == "654321"


def test_cert_dialog_shows_server_details_selectable_and_monospace(qtbot):
    """Host, subject, issuer and the fingerprint are shown; the fingerprint is monospace and selectable."""
    dialog = CertificateDialog(CERT)
    qtbot.addWidget(dialog)
    assert dialog.host.text() == "untrusted.example:443"
    assert dialog.subject.text() == "CN=untrusted.example"
    assert dialog.issuer.text() == "CN=Example CA"
    assert dialog.fingerprint.text().replace("\n", ":") == ":".join(["AB"] * 32)
    assert dialog.fingerprint.textInteractionFlags() & Qt.TextInteractionFlag.TextSelectableByMouse
    assert dialog.fingerprint.fontInfo().fixedPitch()


def test_cert_dialog_buttons_give_the_three_decisions(qtbot):
    """Trust once, Always trust and Cancel return once, always and cancel."""
    for button, expected in (("once_button", "once"), ("always_button", "always"),
                             ("cancel_button", "cancel")):
        dialog = CertificateDialog(CERT)
        qtbot.addWidget(dialog)
        with qtbot.waitSignal(dialog.finished, timeout=2000):
            qtbot.mouseClick(getattr(dialog, button), Qt.MouseButton.LeftButton)
        assert dialog.decision() == expected


def test_cert_dialog_escape_means_cancel(qtbot):
    """Closing the dialog with Escape answers cancel, and Cancel is the default button."""
    dialog = CertificateDialog(CERT)
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.cancel_button.isDefault()
    with qtbot.waitSignal(dialog.rejected, timeout=2000):
        qtbot.keyClick(dialog, Qt.Key.Key_Escape)
    assert dialog.decision() == "cancel"


def test_fingerprint_is_grouped_in_two_lines():
    """A sha256 fingerprint reads as colon-separated upper-case pairs on two lines."""
    text = format_fingerprint("sha256:" + "0f" * 32)
    first, second = text.split("\n")
    assert first == ":".join(["0F"] * 16) and second == ":".join(["0F"] * 16)


def test_cert_dialog_shows_certificate_text_as_plain_text(qtbot):
    """A subject or reason holding markup is shown as the literal text, so a certificate cannot
    restyle the trust question (fake lines, hidden parts)."""
    info = dict(CERT, subject="CN=<b>trusted</b><br>SHA-256: 00:11", reason="<i>verified</i>")
    dialog = CertificateDialog(info)
    qtbot.addWidget(dialog)
    for label in (dialog.subject, dialog.reason, dialog.issuer, dialog.host):
        assert label.textFormat() == Qt.TextFormat.PlainText
    assert dialog.subject.text() == "CN=<b>trusted</b><br>SHA-256: 00:11"
