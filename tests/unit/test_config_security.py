from __future__ import annotations

import pytest

from distqueue.config import ServerConfig, check_exposure, exposed, redact_url


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("redis://user:p%40ss@h/0", "redis://user:***@h/0"),
        ("redis://u:p@ss@h/0", "redis://u:***@h/0"),  # an unencoded @ in the password
        ("redis://secret@h/0", "redis://***@h/0"),
        (
            "rediss://h:1/0?ssl_ca_certs=/x&password=abc",
            "rediss://h:1/0?ssl_ca_certs=/x&password=***",
        ),
        ("redis+sentinel://:pw@a:1,b:2/m", "redis+sentinel://:***@a:1,b:2/m"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("./distqueue-data", "./distqueue-data"),
    ],
)
def test_passwords_in_store_urls_are_never_shown(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "host, others_reach_it",
    [("127.0.0.1", False), ("127.0.0.2", False), ("::1", False), ("localhost", False),
     ("0.0.0.0", True), ("", True), ("::", True), ("10.1.2.3", True)],
)  # fmt: skip
def test_which_addresses_others_reach(host: str, others_reach_it: bool) -> None:
    assert exposed(host) is others_reach_it


def test_an_open_port_needs_a_token_client_certificates_or_insecure() -> None:
    with pytest.raises(ValueError, match=r"refusing to listen on 0\.0\.0\.0 without a token"):
        check_exposure(ServerConfig(host="0.0.0.0"))
    check_exposure(ServerConfig(host="0.0.0.0", token="t"))
    check_exposure(ServerConfig(host="0.0.0.0", tls_ca="ca.pem"))
    check_exposure(ServerConfig(host="0.0.0.0", insecure=True))
    check_exposure(ServerConfig(host="127.0.0.1"))
    with pytest.raises(ValueError, match="the token is empty"):
        check_exposure(ServerConfig(host="127.0.0.1", token=" "))
