"""Binance request authentication: API key header, HMAC-SHA256 signature, recvWindow."""

from __future__ import annotations

import hashlib
import hmac
import re

from simulator import errors

_SIG_RE = re.compile(r"(^|&)signature=[^&]*")


def strip_signature(raw: str) -> tuple[str, str | None]:
    """Remove the ``signature`` parameter from a raw urlencoded string.

    Returns ``(payload_without_signature, signature_or_None)``.
    """
    m = _SIG_RE.search(raw)
    if m is None:
        return raw, None
    sig = m.group(0).split("=", 1)[1]
    stripped = raw[: m.start()] + raw[m.end() :]
    if m.group(1) == "" and stripped.startswith("&"):
        stripped = stripped[1:]
    return stripped, sig


def sign(secret: str, payload: str) -> str:
    """Hex HMAC-SHA256 of ``payload`` with ``secret`` (what ccxt sends)."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


class Authenticator:
    """Checks API keys and signatures against a key -> secret table.

    Contract: :meth:`check_key` raises -2014/-2015 (HTTP 401); :meth:`check_signed`
    additionally raises -1022 for a bad signature, -1102 for a missing timestamp
    and -1021 when the timestamp is outside ``recvWindow`` of ``server_ms``.
    """

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = dict(keys)

    def check_key(self, api_key: str | None) -> str:
        if not api_key:
            raise errors.api_key_format()
        secret = self.keys.get(api_key)
        if secret is None:
            raise errors.bad_api_key()
        return secret

    def check_signed(
        self,
        api_key: str | None,
        raw_query: str,
        raw_body: str,
        params: dict[str, str],
        server_ms: int,
    ) -> None:
        secret = self.check_key(api_key)
        query, qsig = strip_signature(raw_query)
        body, bsig = strip_signature(raw_body)
        signature = qsig or bsig
        if not signature:
            raise errors.mandatory_param("signature")
        # Binance signs "query string concatenated with the request body".
        expected = sign(secret, query + body)
        if not hmac.compare_digest(expected, signature.lower()):
            raise errors.bad_signature()
        ts_raw = params.get("timestamp")
        if ts_raw is None or not ts_raw.isdigit():
            raise errors.mandatory_param("timestamp")
        recv_raw = params.get("recvWindow", "5000")
        if not recv_raw.isdigit() or int(recv_raw) > 60000:
            raise errors.bad_param("recvWindow")
        ts = int(ts_raw)
        if ts > server_ms + 1000 or server_ms - ts > int(recv_raw):
            raise errors.timestamp_outside()
