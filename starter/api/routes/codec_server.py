"""The codec server, an operators' router: lets the Temporal UI and CLI show encrypted case data to operators.

Temporal's codec server protocol: `POST {endpoint}/decode` and `POST {endpoint}/encode` take and
return `{"payloads": [...]}` in proto3 JSON (bytes as base64). The keys never leave this process.

    app.include_router(codec_server.router)          # serves /codec/decode, /codec/encode
    temporal server start-dev --ui-codec-endpoint http://localhost:8000/codec
    temporal workflow show -w dunning-sub_123 \\
        --codec-endpoint http://localhost:8000/codec --codec-auth "Bearer $DUNNING_API_TOKEN"

Only operators may decode: every call needs `DUNNING_API_TOKEN`, either as
`Authorization: Bearer …` (CLI, scripts, a UI behind OIDC with "pass access token") or as the
HttpOnly, SameSite=Strict session cookie that `GET /codec/login` sets once the operator typed the
token (a browser UI, with "Include cross-origin credentials" on in its codec settings). Without
`DUNNING_API_TOKEN` the codec server refuses everyone (503). Browsers may call it only from the origins
in `DUNNING_CODEC_CORS_ORIGINS` (comma-separated; default the dev server's UI, port 8233).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from runtime.codec import DecryptionError
from starter.api.deps import (
    CodecDep,
    CorsDep,
    OperatorAuth,
    codec_cors_headers,
    get_api_token,
    same_secret,
    start_operator_session,
    typed_token,
)

log = structlog.get_logger("dunning.codec_server")

MAX_BODY_BYTES = 8 * 1024 * 1024  # a history page of payloads; Temporal caps one payload at 2 MiB
ALLOWED_HEADERS = "authorization, content-type, x-namespace"


class _CorsRoute(APIRoute):
    """Every answer of decode and encode carries the CORS headers for the UI's origin, a 401 from
    the token check included, so that the UI in the browser can read why it was refused."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_cors(request: Request) -> Response:
            try:
                response = await handler(request)
            except HTTPException as exc:
                exc.headers = {**(exc.headers or {}), **getattr(request.state, "cors", {})}
                raise
            response.headers.update(getattr(request.state, "cors", {}))
            return response

        return with_cors


router = APIRouter(prefix="/codec", tags=["operators"])
# The payload endpoints: CORS for the UI's origins on every answer (the login page needs none).
payloads = APIRouter(route_class=_CorsRoute, dependencies=[Depends(codec_cors_headers)])


async def _read_payloads(request: Request) -> Payloads:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise HTTPException(413, f"body larger than {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("not an object")
        return json_format.ParseDict(document, Payloads(), ignore_unknown_fields=True)
    except (ValueError, TypeError, RecursionError, json_format.ParseError) as exc:
        raise HTTPException(400, f'body must be {{"payloads": [...]}} in proto3 JSON: {type(exc).__name__}') from None


@payloads.post("/decode", summary="Decode (decrypt) payloads for the Temporal UI and CLI")
async def decode(request: Request, credential: OperatorAuth, codec: CodecDep) -> Response:
    items = list((await _read_payloads(request)).payloads)
    if codec is not None:
        try:
            items = await codec.decode(items)
        except DecryptionError as exc:
            log.warning("codec server could not decode", error=str(exc))
            raise HTTPException(422, str(exc)) from None
    return _answer(request, "decode", credential, items)


@payloads.post("/encode", summary="Encode (encrypt) payloads typed in the Temporal UI and CLI")
async def encode(request: Request, credential: OperatorAuth, codec: CodecDep) -> Response:
    items = list((await _read_payloads(request)).payloads)
    if codec is not None:
        items = await codec.encode(items)
    return _answer(request, "encode", credential, items)


def _answer(request: Request, direction: str, credential: str, items: list[Any]) -> Response:
    # An audit line per call: who (which credential), what, how many; never the payloads.
    log.info(
        "codec server call",
        direction=direction,
        payloads=len(items),
        credential=credential,
        namespace=request.headers.get("x-namespace"),
        origin=request.headers.get("origin"),
    )
    return Response(json_format.MessageToJson(Payloads(payloads=items)), media_type="application/json")


@payloads.options("/decode", include_in_schema=False)
@payloads.options("/encode", include_in_schema=False)
async def preflight(cors: CorsDep) -> Response:
    """CORS preflight: browsers send it without credentials, so it reveals nothing but the rules."""
    headers = {}
    if cors:
        headers = {"Access-Control-Allow-Methods": "POST", "Access-Control-Allow-Headers": ALLOWED_HEADERS}
        headers["Access-Control-Max-Age"] = "600"
    return Response(status_code=204, headers=headers)


router.include_router(payloads)


_LOGIN_FORM = """<!doctype html><meta charset="utf-8"><title>Dunning codec server</title>
<form method="post" style="font-family:sans-serif;max-width:28em;margin:4em auto">
<h1>Dunning codec server</h1><p>{message}</p>
<label>Operator token <input type="password" name="token" autocomplete="off" autofocus></label>
<button>Sign in</button></form>"""


@router.get("/login", include_in_schema=False, response_class=HTMLResponse)
async def login_form() -> HTMLResponse:
    return HTMLResponse(_LOGIN_FORM.format(message="Lets the Temporal UI in this browser decode case data."))


@router.post("/login", include_in_schema=False, response_class=HTMLResponse)
async def login(request: Request, expected: Annotated[str | None, Depends(get_api_token)]) -> HTMLResponse:
    supplied = await typed_token(request)
    if supplied is None:
        return HTMLResponse(_LOGIN_FORM.format(message="Too long."), status_code=413)
    if not expected or not supplied or not same_secret(supplied, expected):
        log.warning("codec server login refused", origin=request.headers.get("origin"))
        return HTMLResponse(_LOGIN_FORM.format(message=html.escape("Wrong token.")), status_code=401)
    response = HTMLResponse(_LOGIN_FORM.format(message="Signed in: the Temporal UI can now decode."))
    start_operator_session(response, request, expected, path="/codec")
    log.info("codec server login")
    return response
