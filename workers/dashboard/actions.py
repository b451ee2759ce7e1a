"""Close and trail from the dashboard: off unless `web_actions` and `web_token` are set.

An action reaches the position's workflow exactly as `posguard close` and `posguard
trail` do (the `close` and `set_trailing` updates): the workflow stays the only one
that places, moves or cancels an order. Each request must carry the token as
`Authorization: Bearer <token>` (never a cookie, so another site cannot make a
browser send it). The token is compared in constant time and is never logged.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from domain.position import CloseReason
from domain.trailing import TrailingRule
from workers.settings import Settings
from workflows.position_io import CloseRequest, PositionView

log = logging.getLogger("posguard.dashboard")

CLOSE_TIMEOUT_S = 60


class ActionRefused(Exception):
    """The action was not carried out; `status` is the HTTP answer, the text says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Actions:
    """The dashboard's two actions, behind the settings and the token."""

    client: Client
    settings: Settings

    @property
    def enabled(self) -> bool:
        """True when `web_actions` is on and a non-empty `web_token` is set."""
        token = self.settings.web_token
        return self.settings.web_actions and token is not None and bool(token.get_secret_value())

    def check(self, authorization: str | None) -> None:
        """`ActionRefused(403)` unless actions are enabled and `authorization` is
        `Bearer <web_token>`."""
        if not self.enabled:
            raise ActionRefused(403, "actions are off (web_actions and web_token)")
        assert self.settings.web_token is not None
        given = (authorization or "").removeprefix("Bearer ").strip()
        expected = self.settings.web_token.get_secret_value()
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            raise ActionRefused(403, "wrong or missing token")

    async def close(self, view: PositionView, requested_by: str) -> dict[str, Any]:
        """Close the position at market (the `close` update); its result, JSON-ready."""
        from workflows.position import PositionWorkflow

        handle = self.client.get_workflow_handle_for(PositionWorkflow.run, view.workflow_id)
        request = CloseRequest(reason=CloseReason.OPERATOR, requested_by=requested_by)
        try:
            result = await asyncio.wait_for(
                handle.execute_update(PositionWorkflow.close, request), CLOSE_TIMEOUT_S
            )
        except WorkflowUpdateFailedError as exc:
            raise ActionRefused(409, f"close refused: {exc.cause or exc}") from None
        except RPCError as exc:
            raise ActionRefused(409, f"close not delivered: {exc.message}") from None
        except TimeoutError:
            raise ActionRefused(
                504,
                f"still closing after {CLOSE_TIMEOUT_S} s; the workflow keeps trying "
                "(the stop stays on the exchange)",
            ) from None
        log.info("dashboard close of %s by %s: %s", view.workflow_id, requested_by, result.state)
        return dict(result.model_dump(mode="json"))

    async def trail(self, view: PositionView, callback_pct: Decimal) -> dict[str, Any]:
        """Set the trailing callback (the `set_trailing` update, on top of the position's
        current rule); the live stop never loosens. The previous and new rules."""
        from workflows.position import PositionWorkflow

        current = view.trailing_rule
        try:
            rule = (
                TrailingRule(callback_pct=callback_pct)
                if current is None
                else current.model_copy(update={"callback_pct": callback_pct})
            )
            TrailingRule.model_validate(rule.model_dump())  # model_copy does not validate
        except ValueError as exc:
            raise ActionRefused(400, f"invalid trailing callback: {exc}") from None
        handle = self.client.get_workflow_handle_for(PositionWorkflow.run, view.workflow_id)
        try:
            previous = await handle.execute_update(PositionWorkflow.set_trailing, rule)
        except WorkflowUpdateFailedError as exc:
            raise ActionRefused(409, f"trail refused: {exc.cause or exc}") from None
        except RPCError as exc:
            raise ActionRefused(409, f"trail not delivered: {exc.message}") from None
        log.info("dashboard trail of %s: callback %s%%", view.workflow_id, callback_pct)
        return {
            "previous": None if previous is None else previous.model_dump(mode="json"),
            "rule": rule.model_dump(mode="json"),
        }
