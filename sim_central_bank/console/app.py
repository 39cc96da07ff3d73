"""The console's web application: Starlette routes rendering Jinja2 templates, read-only.

Every page is plain HTML (forms with GET, links; no script): it works without JavaScript. Live
updates are HTML too: list pages reload themselves every ``refresh_seconds`` (a meta refresh),
and an open payment's page reloads into ``?after=VERSION``, which waits on WatchPayment for the
next change before it answers (a long poll), so a change shows within a second of happening.

Errors answer as pages with the status the API's typed error calls for: what the identity may
not see is 404, exactly as an id that does not exist (the server already answers both alike).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from condpay.client import Client
from condpay.errors import (
    ApiError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from sim_central_bank.console import charts, views

__all__ = ["ConsoleSettings", "build_app"]

TEMPLATES: Final = Path(__file__).parent / "templates"
_SAFE_NAME: Final = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    server: str  # the core's HOST:PORT
    caller: str  # the identity every call is made with
    refresh_seconds: int = 5  # 0: no automatic reload of the overview and the lists
    checkpoint_key: bytes | None = None  # the key bundles are verified against (None: theirs)
    checkpoint_key_source: str = ""  # where that key came from, for the page


Handler = Callable[[Request], Awaitable[Response]]


def build_app(client: Client, settings: ConsoleSettings) -> Starlette:
    """The console over ``client`` (a central bank's or an auditor's)."""
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.globals.update(
        caller=settings.caller, server=settings.server, charts=charts, Bar=charts.Bar
    )

    def page(
        request: Request, name: str, context: dict[str, Any], *, status: int = 200
    ) -> Response:
        context.setdefault("refresh", settings.refresh_seconds)
        context.setdefault("refresh_url", "")
        return templates.TemplateResponse(request, name, context, status_code=status)

    def guarded(what: str, handler: Handler) -> Handler:
        """The page, or the page that says why not (typed errors only: never a traceback)."""

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except NotFound as error:
                return _problem(request, 404, f"{what}: not found", _not_found(error, settings))
            except (InvalidArgument, ValueError) as error:
                detail = error.reason if isinstance(error, ApiError) else str(error)
                return _problem(request, 400, f"{what}: not a valid request", detail)
            except (PermissionDenied, Unauthenticated) as error:
                return _problem(
                    request,
                    403,
                    f"{what}: refused",
                    f"{settings.caller} may not read this ({error.reason or error.code.name})",
                )
            except (Unavailable, DeadlineExceeded) as error:
                return _problem(
                    request,
                    503,
                    f"{what}: the core does not answer",
                    f"{settings.server}: {error.code.name}; this page tries again when reloaded",
                )
            except ApiError as error:
                return _problem(
                    request, 502, f"{what}: the core refused", f"{error.code.name} {error.reason}"
                )

        return run

    def _problem(request: Request, status: int, title: str, detail: str) -> Response:
        return page(
            request, "problem.html", {"title": title, "detail": detail, "refresh": 0}, status=status
        )

    async def overview(request: Request) -> Response:
        now_us = time.time_ns() // 1000
        data = await views.overview(client, now_us)
        payment_bars = [
            charts.Bar(state, count, f"/payments?state={state}")
            for state, count in data.payments_by_state.items()
        ]
        settlement_bars = [
            charts.Bar(state, count, f"/settlements?state={state}")
            for state, count in data.settlements_by_state.items()
        ]
        deadline_ticks = [
            (f"{e.payment_id}: {e.held}, {e.time_left}", e.deadline_us, f"/payments/{e.payment_id}")
            for e in data.open_escrows
        ]
        return page(
            request,
            "overview.html",
            {
                "o": data,
                "title": "Overview",
                "payment_bars": payment_bars,
                "settlement_bars": settlement_bars,
                "deadline_ticks": deadline_ticks,
            },
        )

    async def payments(request: Request) -> Response:
        q = request.query_params
        filters = {
            "state": q.get("state", ""),
            "payer": q.get("payer", "").strip(),
            "contract": q.get("contract", "").strip(),
        }
        data = await views.payments_page(client, page_token=q.get("page_token", ""), **filters)
        return page(
            request,
            "payments.html",
            {
                "title": "Payments",
                "filters": filters,
                "states": views.PAYMENT_STATES,
                "list": data,
            },
        )

    async def payment(request: Request) -> Response:
        payment_id = request.path_params["payment_id"]
        after = request.query_params.get("after", "")
        data = await views.payment_page(
            client,
            payment_id,
            checkpoint_key=settings.checkpoint_key,
            after_version=int(after) if after.isdigit() else -1,
        )
        refresh_url = (
            f"{request.url.path}?after={data.version}"
            if data.open and settings.refresh_seconds
            else ""
        )
        return page(
            request,
            "payment.html",
            {
                "title": f"Payment {data.payment_id}",
                "p": data,
                "refresh": 1 if refresh_url else 0,
                "refresh_url": refresh_url,
                "key_source": settings.checkpoint_key_source,
            },
        )

    async def evidence(request: Request) -> Response:
        payment_id = request.path_params["payment_id"]
        bundle = await views.evidence_bundle(client, payment_id)
        name = _SAFE_NAME.sub("_", payment_id)
        return Response(
            bundle,
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{name}.evidence.json"'},
        )

    async def settlements(request: Request) -> Response:
        q = request.query_params
        filters = {"state": q.get("state", ""), "payment": q.get("payment", "").strip()}
        data = await views.settlements_page(client, page_token=q.get("page_token", ""), **filters)
        return page(
            request,
            "settlements.html",
            {
                "title": "Settlements",
                "filters": filters,
                "states": views.SETTLEMENT_STATES,
                "list": data,
            },
        )

    async def settlement(request: Request) -> Response:
        data = await views.settlement_page(client, request.path_params["settlement_id"])
        return page(
            request,
            "settlement.html",
            {"title": f"Settlement {data.row.settlement_id}", "s": data},
        )

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    async def missing(request: Request, _exc: Exception) -> Response:
        return _problem(request, 404, "No such page", request.url.path)

    routes = [
        Route("/", guarded("Overview", overview)),
        Route("/payments", guarded("Payments", payments)),
        Route("/payments/{payment_id}", guarded("Payment", payment)),
        Route("/payments/{payment_id}/evidence.json", guarded("Evidence", evidence)),
        Route("/settlements", guarded("Settlements", settlements)),
        Route("/settlements/{settlement_id}", guarded("Settlement", settlement)),
        Route("/healthz", healthz),
    ]
    return Starlette(routes=routes, exception_handlers={404: missing})


def _not_found(error: NotFound, settings: ConsoleSettings) -> str:
    return (
        f"{error.reason or 'NOT_FOUND'}: there is none with this id that {settings.caller} may see"
    )
