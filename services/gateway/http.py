"""The gateway's HTTP listener (aiohttp): two routes, every answer JSON.

  POST /webhook/<strategy_id>   202 accepted | 200 duplicate | 400 MALFORMED_JSON, BAD_FIELD
                                | 401 BAD_PASSPHRASE, BAD_SIGNATURE | 404 UNKNOWN_STRATEGY
                                | 413 BODY_TOO_LARGE | 415 NOT_UTF8 | 422 UNKNOWN_TICKER
                                | 429 RATE_LIMITED (Retry-After) | 503 BUSY (overload)
  GET /alerts/<alert_id>        200 the alert's outcome | 401 | 404 UNKNOWN_ALERT

Every refusal is {"error": REASON, "message": text}. Other paths and methods get 404/405 in the
same shape. An unexpected exception is logged and answered 500 INTERNAL; the listener goes on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import ssl
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from services.gateway.alerts import PASSPHRASE_HEADER, SIGNATURE_HEADER
from services.runtime.security import is_loopback

if TYPE_CHECKING:
    from services.gateway.app import Config, GatewayApp

log = logging.getLogger(__name__)

#: HTTP status -> the reason an aiohttp-level refusal is given.
_HTTP_REASONS = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "BODY_TOO_LARGE"}


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def respond(answer: Answer) -> web.Response:
    return web.Response(
        text=json.dumps(answer.body, separators=(",", ":")), status=answer.status,
        content_type="application/json", headers=answer.headers,
    )


def _refusal(status: int, reason: str, message: str) -> web.Response:
    return respond(Answer(status, {"error": reason, "message": message}))


class _JsonErrorsHandler(RequestHandler):  # type: ignore[misc]
    """aiohttp's own refusals of a request its HTTP parser rejects (bad framing, an unknown
    Content-Encoding), answered in the gateway's JSON shape and logged as one line, not as an
    error with a traceback: the internet sends such requests all day."""

    __slots__ = ()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        detail = (message or str(exc or "") or "malformed HTTP request").splitlines()[0][:200]
        log.info("malformed HTTP request", extra={"status": status, "detail": detail})
        response = respond(Answer(status, {"error": "BAD_HTTP_REQUEST", "message": detail}))
        response.force_close()
        return response


class _JsonErrorsServer(web.Server):
    def __call__(self) -> RequestHandler:
        handler = super().__call__()
        # aiohttp has no option for the handler class; the fuzz test holds this to every answer.
        handler.__class__ = _JsonErrorsHandler
        return handler


class WebhookServer:
    def __init__(self, gateway: GatewayApp, config: Config) -> None:
        self.gateway = gateway
        self.config = config
        self.port = config.http_port
        self._runner: web.AppRunner | None = None

    async def start(self) -> WebhookServer:
        app = web.Application(middlewares=[self._json_errors], client_max_size=self.config.max_body_bytes)
        app.add_routes([
            web.post("/webhook/{strategy_id}", self._webhook),
            web.get("/alerts/{alert_id}", self._alert),
        ])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        assert type(self._runner.server) is web.Server
        self._runner.server.__class__ = _JsonErrorsServer
        context = None
        if self.config.http_tls_cert_file:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.config.http_tls_cert_file, self.config.http_tls_key_file)
        elif not is_loopback(self.config.http_host):
            log.warning("plaintext HTTP beyond loopback: terminate TLS in front of the gateway (an ingress), "
                        "passphrases must not cross a network in the clear")
        site = web.TCPSite(self._runner, self.config.http_host, self.config.http_port, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("webhook listener", extra={"host": self.config.http_host, "port": self.port, "https": bool(context)})
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @web.middleware
    async def _json_errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            reason = _HTTP_REASONS.get(exc.status, "HTTP_ERROR")
            return _refusal(exc.status, reason, exc.reason or reason)
        except Exception:
            # A bug: logged with its traceback (no body, no headers: they may hold secrets), answered 500.
            log.exception("webhook handler failed", extra={"path": request.path, "method": request.method})
            return _refusal(500, "INTERNAL", "the gateway failed on this request; it is logged")

    async def _webhook(self, request: web.Request) -> web.Response:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _refusal(413, "BODY_TOO_LARGE", f"the alert body must be at most {limit} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _refusal(413, "BODY_TOO_LARGE", f"the alert body must be at most {limit} bytes")
        answer = self.gateway.receive(request.match_info["strategy_id"], body, request.headers.get(SIGNATURE_HEADER))
        return respond(answer)

    async def _alert(self, request: web.Request) -> web.Response:
        answer = self.gateway.result(
            request.match_info["alert_id"], request.headers.get(PASSPHRASE_HEADER), request.headers.get(SIGNATURE_HEADER)
        )
        return respond(answer)
