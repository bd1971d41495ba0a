"""TLS for distqueue's protocol: the server's and the clients' SSL contexts, and one
clear line for each way a handshake goes wrong.

Imported only when TLS is used. Both sides insist on TLS 1.2 or newer; a client
verifies the server's certificate and name (the host of its address) against the
system's trust store, or against the CA file it is given.
"""

from __future__ import annotations

import os
import ssl
from typing import NoReturn

__all__ = ["client_context", "describe_failure", "server_context"]


def _check_file(path: str, what: str) -> None:
    """ValueError, one line, when ``path`` is not a readable file."""
    if not os.path.exists(path):
        raise ValueError(f"{what} {path}: no such file")
    if not os.path.isfile(path):
        raise ValueError(f"{what} {path}: not a file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{what} {path}: not readable (permission denied)")


def _reason(exc: ssl.SSLError) -> str:
    """OpenSSL's reason in words: ``KEY_VALUES_MISMATCH`` -> ``key values mismatch``."""
    return (exc.reason or str(exc)).replace("_", " ").lower()


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    def encrypted() -> NoReturn:  # never an interactive password prompt
        raise ValueError(f"the TLS key {key} is encrypted: give an unencrypted key")

    try:
        ctx.load_cert_chain(cert, key, password=encrypted)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(f"the TLS key {key} does not match the certificate {cert}") from None
        detail = _reason(exc) if exc.reason not in (None, "PEM_LIB") else "not PEM files"
        raise ValueError(
            f"cannot use the TLS certificate {cert} with the key {key}: {detail}"
            " (a PEM certificate, and its PEM private key)"
        ) from None


def _load_ca(ctx: ssl.SSLContext, ca: str) -> None:
    try:
        ctx.load_verify_locations(cafile=ca)
    except ssl.SSLError as exc:
        raise ValueError(
            f"cannot use the TLS CA file {ca}: {_reason(exc)} (it must hold PEM certificates)"
        ) from None


def server_context(cert: str | None, key: str | None, ca: str | None = None) -> ssl.SSLContext:
    """The server's context: its certificate chain and key; with ``ca``, every client
    must present a certificate that CA signed. ValueError, one line, for what is
    missing, unreadable or mismatched."""
    if not cert or not key:
        if cert:
            raise ValueError("--tls-cert needs --tls-key: the certificate's private key")
        if key:
            raise ValueError("--tls-key needs --tls-cert: the server's certificate")
        raise ValueError("--tls-ca (require client certificates) needs --tls-cert and --tls-key")
    _check_file(cert, "TLS certificate")
    _check_file(key, "TLS key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, cert, key)
    if ca:
        _check_file(ca, "TLS CA file")
        _load_ca(ctx, ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(
    ca: str | None = None, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """A client's context: the server's certificate and name verified against ``ca``
    (else the system's trust store); ``cert`` and ``key``, a client certificate."""
    if bool(cert) != bool(key):
        raise ValueError(
            "a TLS client certificate needs both --tls-cert and --tls-key"
            " (DISTQUEUE_TLS_CERT, DISTQUEUE_TLS_KEY)"
        )
    ctx = ssl.create_default_context()
    if ca:
        _check_file(ca, "TLS CA file")
        _load_ca(ctx, ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert and key:
        _check_file(cert, "TLS client certificate")
        _check_file(key, "TLS client key")
        _load_chain(ctx, cert, key)
    return ctx


_PLAIN = {"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG",
          "RECORD_LAYER_FAILURE", "WRONG_SSL_VERSION"}  # fmt: skip
_CERT_WANTED = {"TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_HANDSHAKE_FAILURE"}
_CERT_REFUSED = {"TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE",
                 "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
                 "SSLV3_ALERT_CERTIFICATE_EXPIRED", "SSLV3_ALERT_CERTIFICATE_REVOKED",
                 "TLSV1_ALERT_ACCESS_DENIED", "TLSV1_ALERT_DECRYPT_ERROR"}  # fmt: skip


def describe_failure(
    exc: BaseException | None,
    where: str,
    *,
    ca: bool = False,
    client_cert: bool = False,
    handshake_done: bool = False,
) -> str:
    """One line for a TLS connection to ``where`` (HOST:PORT) that failed in its
    handshake (``exc``: what was raised; None: the server closed it), or right after
    it (``handshake_done``: a TLS 1.3 server checks the client's certificate after
    the client's side of the handshake is done, and closes the connection when it
    wants one it did not get). ``ca``: the client trusts a CA file of its own;
    ``client_cert``: it presented a certificate."""
    failed = f"TLS handshake with {where} failed"
    closed = exc is None or isinstance(exc, ssl.SSLEOFError | ConnectionError | EOFError)
    if closed and handshake_done:
        if client_cert:
            return (
                f"{failed}: the server closed the connection at once: it did not accept our"
                " client certificate (is it signed by the CA the server trusts, its --tls-ca?)"
            )
        return (
            f"{failed}: the server closed the connection at once: it requires a client"
            " certificate (give --tls-cert and --tls-key)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or _reason(exc)
        if exc.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH
            hint = "connect with a name or address the server's certificate lists"
        elif ca:
            hint = "is the server's certificate signed by the CA in --tls-ca?"
        else:
            hint = "the system does not trust it: give the CA that signed it with --tls-ca"
        return f"{failed}: certificate verify failed: {detail} ({hint})"
    if isinstance(exc, ssl.SSLError) and exc.reason in _PLAIN:
        return (
            f"{failed}: the server does not speak TLS ({_reason(exc)}): connect without"
            " --tls, with a plain HOST:PORT address"
        )
    if isinstance(exc, ssl.SSLError) and exc.reason in _CERT_WANTED and not client_cert:
        return (
            f"{failed}: the server requires a client certificate: give --tls-cert and"
            f" --tls-key ({_reason(exc)})"
        )
    if isinstance(exc, ssl.SSLError) and exc.reason in _CERT_WANTED | _CERT_REFUSED:
        return (
            f"{failed}: the server refused our client certificate ({_reason(exc)}): is it"
            " signed by the CA the server trusts (its --tls-ca)?"
        )
    if isinstance(exc, ssl.SSLError) and exc.reason == "TLSV1_ALERT_PROTOCOL_VERSION":
        return f"{failed}: no TLS version in common (distqueue needs TLS 1.2 or newer)"
    if isinstance(exc, TimeoutError):
        return (
            f"{failed}: no answer in time: does the server speak TLS? (a plain server"
            " does not answer a TLS hello)"
        )
    if closed:
        return (
            f"{failed}: the server closed the connection: does it speak TLS, and does it"
            " want a client certificate (--tls-cert, --tls-key)?"
        )
    if isinstance(exc, ssl.SSLError):
        return f"{failed}: {_reason(exc)}"
    return f"{failed}: {getattr(exc, 'strerror', None) or exc}"
