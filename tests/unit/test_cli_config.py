"""`nija serve` refuses to start a service that could not work securely: checked before binding."""

from __future__ import annotations

import pytest

from services import cli


@pytest.fixture(autouse=True)
def no_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NIJA_SERVICE_TOKEN", "NIJA_SERVICE_TOKEN_FILE", "NIJA_TLS_CERT", "NIJA_TLS_KEY", "NIJA_TLS_CA"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("service", ["router", "aggregator", "executor"])
def test_a_service_that_calls_others_needs_its_own_token(service: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", service, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "NIJA_SERVICE_TOKEN" in err and "needs its own token" in err


def test_a_certificate_without_its_key_stops_the_start(monkeypatch: pytest.MonkeyPatch, tmp_path, capsys) -> None:
    cert = tmp_path / "router.pem"
    cert.write_text("not used")
    monkeypatch.setenv("NIJA_TLS_CERT", str(cert))
    monkeypatch.setenv("NIJA_SERVICE_TOKEN", "nija_000000000000_" + "a" * 43)
    assert cli.main(["serve", "router", "--port", "0"]) == 2
    assert "NIJA_TLS_KEY" in capsys.readouterr().err


def test_plaintext_on_a_non_loopback_address_is_refused(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert cli.main(["serve", "permission", "--host", "0.0.0.0", "--port", "0",
                     "--set", f"database_path={tmp_path / 'p.db'}"]) == 2
    assert "NIJA_ALLOW_PLAINTEXT_REMOTE" in capsys.readouterr().err
