"""Sending one message to one channel over HTTP: Telegram, Slack, or a JSON webhook.

The only place that holds a channel's token or URL. No error raised from here
names either (a Telegram URL carries the bot token; a Slack webhook URL is itself
the secret): failures say the channel's name, the HTTP status and what the service
answered, nothing more.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from domain.alerts import TELEGRAM_API, AlertChannel, AlertMessage, message_text

SEND_TIMEOUT_S = 10  # a channel that takes longer is retried


class NotDelivered(Exception):
    """The channel did not take the message; `retryable` says whether to try again."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.retryable = retryable


def webhook_body(message: AlertMessage) -> dict[str, Any]:
    """The generic webhook's JSON: the message's fields and its text."""
    body = message.model_dump(mode="json")
    body["id"] = message.message_id
    body["text"] = message_text(message)
    return body


def _request(
    channel: AlertChannel, message: AlertMessage
) -> tuple[str, dict[str, Any], dict[str, str]]:
    headers = {"Content-Type": "application/json", "User-Agent": "posguard-alerts"}
    if channel.kind == "telegram":
        assert channel.token is not None
        base = (channel.url.get_secret_value() if channel.url else TELEGRAM_API).rstrip("/")
        url = f"{base}/bot{channel.token.get_secret_value()}/sendMessage"
        payload = {
            "chat_id": channel.chat_id,
            "text": message_text(message),
            "disable_web_page_preview": True,
        }
        return url, payload, headers
    assert channel.url is not None
    if channel.kind == "slack":
        return channel.url.get_secret_value(), {"text": message_text(message)}, headers
    headers["Idempotency-Key"] = message.message_id
    return channel.url.get_secret_value(), webhook_body(message), headers


async def send(
    session: aiohttp.ClientSession, channel: AlertChannel, message: AlertMessage
) -> None:
    """POST `message` to `channel`; `NotDelivered` when it was not taken.

    Retryable: no connection, a timeout, 429 and 5xx. Any other answer but 2xx (and,
    from Telegram, `"ok": true`) is a refusal that a retry would not change.
    """
    url, payload, headers = _request(channel, message)
    try:
        async with session.post(
            url,
            data=json.dumps(payload),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_S),
        ) as response:
            status = response.status
            text = (await response.text())[:300]
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        # The exception's text may carry the URL: only its class is kept.
        raise NotDelivered(f"{channel.name}: {type(exc).__name__}", retryable=True) from None
    if status == 429 or status >= 500:
        raise NotDelivered(f"{channel.name}: HTTP {status} {_scrub(text, channel)}", retryable=True)
    if not 200 <= status < 300:
        raise NotDelivered(
            f"{channel.name}: HTTP {status} {_scrub(text, channel)}", retryable=False
        )
    if channel.kind == "telegram":
        try:
            ok = bool(json.loads(text).get("ok"))
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            raise NotDelivered(f"{channel.name}: {_scrub(text, channel)}", retryable=False)


def _scrub(text: str, channel: AlertChannel) -> str:
    """`text` with the channel's secrets replaced (a service may echo them)."""
    for secret in (channel.token, channel.url):
        if secret is not None and secret.get_secret_value():
            text = text.replace(secret.get_secret_value(), "***")
    return text.strip()
