"""Codec server: lets the Temporal UI and CLI show encrypted case data to operators.

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
`DUNNING_API_TOKEN` the codec server refuses everyone. Browsers may call it only from the origins
in `DUNNING_CODEC_CORS_ORIGINS` (comma-separated; default the dev server's UI, port 8233).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
from functools import lru_cache
from urllib.parse import parse_qs

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from runtime.codec import DecryptionError, EncryptionCodec, EncryptionConfigError
from runtime.settings import Settings, reveal

log = structlog.get_logger("dunning.codec_server")

router = APIRouter(prefix="/codec", tags=["codec server"])

MAX_BODY_BYTES = 8 * 1024 * 1024  # a history page of payloads; Temporal caps one payload at 2 MiB
COOKIE = "dunning_codec_session"
ALLOWED_HEADERS = "authorization, content-type, x-namespace"


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status, self.detail = status, detail


def allowed_origins() -> set[str]:
    return Settings().codec_cors_origins()


@lru_cache(maxsize=4)
def _codec_for(spec: str) -> EncryptionCodec | None:
    return EncryptionCodec.from_keys(spec)


def current_codec() -> EncryptionCodec | None:
    return _codec_for(reveal(Settings().dunning_encryption_keys).strip())


def _session_value(token: str) -> str:
    # The cookie holds a digest of the token, never the token: rotating the token ends every session.
    return hmac.new(token.encode(), b"dunning codec session", hashlib.sha256).hexdigest()


def _cors_headers(request: Request) -> dict[str, str]:
    origin = request.headers.get("origin", "").rstrip("/")
    if not origin or origin not in allowed_origins():
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def _api_token(request: Request) -> str:
    """The app's settings when it has them (starter.api.app), else the environment."""
    settings = getattr(request.app.state, "settings", None)
    if not isinstance(settings, Settings):
        settings = Settings()
    return reveal(settings.dunning_api_token)


def _operator(request: Request) -> str:
    """Which credential let the caller in; raises `_Refused` when none does."""
    expected = _api_token(request)
    if not expected:
        raise _Refused(401, "codec server disabled: DUNNING_API_TOKEN is not set")
    scheme, _, supplied = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and supplied and hmac.compare_digest(supplied.strip().encode(), expected.encode()):
        return "bearer"
    cookie = request.cookies.get(COOKIE, "")
    if cookie and hmac.compare_digest(cookie.encode(), _session_value(expected).encode()):
        return "session"
    raise _Refused(401, "operator token required (Authorization: Bearer $DUNNING_API_TOKEN)")


async def _read_payloads(request: Request) -> Payloads:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise _Refused(413, f"body larger than {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _Refused(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("not an object")
        return json_format.ParseDict(document, Payloads(), ignore_unknown_fields=True)
    except (ValueError, TypeError, RecursionError, json_format.ParseError) as exc:
        raise _Refused(400, f'body must be {{"payloads": [...]}} in proto3 JSON: {type(exc).__name__}') from None


async def _apply(request: Request, direction: str) -> Response:
    cors = _cors_headers(request)
    try:
        how = _operator(request)
        payloads = await _read_payloads(request)
        try:
            codec = current_codec()
        except EncryptionConfigError as exc:
            log.error("codec server misconfigured", error=str(exc))
            return JSONResponse({"detail": "encryption keys are misconfigured"}, status_code=503, headers=cors)
        items = list(payloads.payloads)
        if codec is not None:
            items = await (codec.decode(items) if direction == "decode" else codec.encode(items))
    except _Refused as refused:
        return JSONResponse({"detail": refused.detail}, status_code=refused.status, headers=cors)
    except DecryptionError as exc:
        log.warning("codec server could not decode", error=str(exc))
        return JSONResponse({"detail": str(exc)}, status_code=422, headers=cors)
    # An audit line per call: who (which credential), what, how many; never the payloads.
    log.info(
        "codec server call",
        direction=direction,
        payloads=len(items),
        credential=how,
        namespace=request.headers.get("x-namespace"),
        origin=request.headers.get("origin"),
    )
    body = json_format.MessageToJson(Payloads(payloads=items))
    return Response(body, media_type="application/json", headers=cors)


@router.post("/decode", summary="Decode (decrypt) payloads for the Temporal UI and CLI")
async def decode(request: Request) -> Response:
    return await _apply(request, "decode")


@router.post("/encode", summary="Encode (encrypt) payloads typed in the Temporal UI and CLI")
async def encode(request: Request) -> Response:
    return await _apply(request, "encode")


@router.options("/decode", include_in_schema=False)
@router.options("/encode", include_in_schema=False)
async def preflight(request: Request) -> Response:
    """CORS preflight: browsers send it without credentials, so it reveals nothing but the rules."""
    headers = _cors_headers(request)
    if headers:
        headers |= {"Access-Control-Allow-Methods": "POST", "Access-Control-Allow-Headers": ALLOWED_HEADERS}
        headers["Access-Control-Max-Age"] = "600"
    return Response(status_code=204, headers=headers)


_LOGIN_FORM = """<!doctype html><meta charset="utf-8"><title>Dunning codec server</title>
<form method="post" style="font-family:sans-serif;max-width:28em;margin:4em auto">
<h1>Dunning codec server</h1><p>{message}</p>
<label>Operator token <input type="password" name="token" autocomplete="off" autofocus></label>
<button>Sign in</button></form>"""


@router.get("/login", include_in_schema=False, response_class=HTMLResponse)
async def login_form() -> HTMLResponse:
    return HTMLResponse(_LOGIN_FORM.format(message="Lets the Temporal UI in this browser decode case data."))


@router.post("/login", include_in_schema=False, response_class=HTMLResponse)
async def login(request: Request) -> HTMLResponse:
    expected = _api_token(request)
    body = await request.body()
    if len(body) > 4096:
        return HTMLResponse(_LOGIN_FORM.format(message="Too long."), status_code=413)
    try:
        supplied = parse_qs(body.decode(), max_num_fields=5).get("token", [""])[0]
    except (UnicodeDecodeError, ValueError):
        supplied = ""
    if not expected or not supplied or not hmac.compare_digest(supplied.encode(), expected.encode()):
        log.warning("codec server login refused", origin=request.headers.get("origin"))
        return HTMLResponse(_LOGIN_FORM.format(message=html.escape("Wrong token.")), status_code=401)
    response = HTMLResponse(_LOGIN_FORM.format(message="Signed in: the Temporal UI can now decode."))
    response.set_cookie(
        COOKIE,
        _session_value(expected),
        max_age=8 * 3600,
        httponly=True,
        samesite="strict",  # the UI and the API are the same site (same host, or subdomains of one)
        secure=request.url.scheme == "https",
        path="/codec",
    )
    log.info("codec server login")
    return response
