"""Bybit v5 request authentication: ``X-BAPI-*`` headers and the WebSocket auth op.

REST: ``X-BAPI-SIGN`` = hex HMAC-SHA256 of ``timestamp + apiKey + recvWindow +
(raw query string | raw JSON body)``; the timestamp must lie within
``recvWindow`` of the server time (Bybit: ``server - recvWindow <= ts < server + 1000``).
WebSocket: ``{"op":"auth","args":[apiKey, expires, hex HMAC("GET/realtime" + expires)]}``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from simulator import bybit_errors as E
from simulator.auth import sign

DEFAULT_RECV_WINDOW = 5000


class BybitAuthenticator:
    """Checks Bybit signatures against a key -> secret table.

    Contract: :meth:`check_rest` raises retCode 10003 for a missing/unknown key,
    10004 for a bad or missing signature and 10002 for a timestamp outside the
    receive window; :meth:`check_ws` returns an error text or None.
    """

    def __init__(self, keys: Mapping[str, str]) -> None:
        self.keys = dict(keys)

    def check_rest(self, headers: Mapping[str, str], payload: str, server_ms: int) -> str:
        """Validate one private request; returns the API key."""
        key = headers.get("X-BAPI-API-KEY") or ""
        secret = self.keys.get(key)
        if not key or secret is None:
            raise E.err(E.INVALID_KEY, "API key is invalid.")
        ts_raw = headers.get("X-BAPI-TIMESTAMP") or ""
        if not ts_raw.isdigit():
            raise E.params_error("invalid request, please check your timestamp")
        recv_raw = headers.get("X-BAPI-RECV-WINDOW") or str(DEFAULT_RECV_WINDOW)
        if not recv_raw.isdigit():
            raise E.params_error("invalid recv_window")
        ts, recv = int(ts_raw), int(recv_raw)
        if ts < server_ms - recv or ts >= server_ms + 1000:
            raise E.err(
                E.TIMESTAMP,
                "invalid request, please check your server timestamp or recv_window param. "
                f"req_timestamp[{ts}],server_timestamp[{server_ms}],recv_window[{recv}]",
            )
        origin = f"{ts_raw}{key}{recv_raw}{payload}"
        given = headers.get("X-BAPI-SIGN") or ""
        if not hmac.compare_digest(given.lower(), sign(secret, origin)):
            raise E.err(E.INVALID_SIGN, f"error sign! origin_string[{origin}]")
        return key

    def check_ws(self, args: object, server_ms: int) -> str | None:
        """None when ``args`` of an auth op are valid, else Bybit's error text."""
        if not isinstance(args, list) or len(args) != 3:
            return "Params Error"
        key, expires, signature = (str(a) for a in args)
        secret = self.keys.get(key)
        if secret is None:
            return "error:USVC1111"
        if not expires.isdigit():
            return "Params Error"
        if int(expires) < server_ms:
            return "Params Error"
        if not hmac.compare_digest(signature.lower(), sign(secret, f"GET/realtime{expires}")):
            return "error:signature verification failed"
        return None


def ws_signature(secret: str, expires: int) -> str:
    """The signature a client sends in the WS auth op (handy for tests)."""
    return sign(secret, f"GET/realtime{expires}")
