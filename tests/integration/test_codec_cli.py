"""The codec server with the real `temporal` CLI (the same protocol the Web UI speaks):
it decodes an encrypted case for an operator with the token, encodes what an operator types,
and shows nothing readable to anyone without the token."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import uuid
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from dunning.models import DunningInput
from dunning.policy import load_policies
from runtime.codec import ENCODING, EncryptionCodec, data_converter, parse_keys
from starter.api.routes import codec_server
from tests.helpers import binary
from tests.helpers.case_harness import failure
from tests.helpers.trust_harness import codec_client, write_policies

TOKEN = "cli-operator-token-" + "q" * 16
KEYS = f"k1:{base64.b64encode(os.urandom(32)).decode()}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def codec_url(monkeypatch):
    monkeypatch.setenv("DUNNING_API_TOKEN", TOKEN)
    monkeypatch.setenv("DUNNING_ENCRYPTION_KEYS", KEYS)
    app = FastAPI()
    app.include_router(codec_server.router)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", log_config=None)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}/codec"
    server.should_exit = True
    await task


async def temporal(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        binary("temporal"), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    return proc.returncode, out.decode(errors="replace")


async def test_the_temporal_cli_reads_and_writes_an_encrypted_case_through_the_codec_server(
    dev_env: WorkflowEnvironment, codec_url: str, tmp_path: Path
):
    client = codec_client(dev_env.client, data_converter(KEYS))
    suffix = uuid.uuid4().hex[:8]
    policy = load_policies(write_policies(tmp_path / "policies"))["default"]
    workflow_id = f"dunning-sub_cli{suffix}"
    await client.start_workflow(
        "DunningWorkflow",
        DunningInput(subscription_id=f"sub_cli{suffix}", customer_id=f"cus_cli{suffix}", policy=policy),
        id=workflow_id,
        task_queue=f"no-worker-{suffix}",  # nothing runs it: we only read what the server stores
        start_signal="payment_failed",
        start_signal_args=[failure(f"in_CLIsecret{suffix}")],
    )
    connection = ["--address", dev_env.client.service_client.config.target_host, "--namespace", "default"]
    try:
        # Without the codec server the CLI shows ciphertext only.
        code, raw = await temporal("workflow", "show", "-w", workflow_id, "-o", "json", *connection)
        assert code == 0, raw
        assert f"in_CLIsecret{suffix}" not in raw

        # With it and the operator token: the invoice is readable.
        code, shown = await temporal(
            "workflow",
            "show",
            "-w",
            workflow_id,
            "-o",
            "json",
            *connection,
            "--codec-endpoint",
            codec_url,
            "--codec-auth",
            f"Bearer {TOKEN}",
        )
        assert code == 0, shown
        assert f"in_CLIsecret{suffix}" in _decoded_text(shown)

        # With a wrong token the codec server refuses: the CLI fails rather than showing anything.
        code, refused = await temporal(
            "workflow",
            "show",
            "-w",
            workflow_id,
            "-o",
            "json",
            *connection,
            "--codec-endpoint",
            codec_url,
            "--codec-auth",
            "Bearer wrong",
            "--command-timeout",
            "2s",
        )
        assert code != 0 and f"in_CLIsecret{suffix}" not in _decoded_text(refused)

        # An operator's signal typed in the CLI is encrypted by the codec server before it is stored.
        code, out = await temporal(
            "workflow",
            "signal",
            "-w",
            workflow_id,
            "--name",
            "pause",
            "--input",
            '{"reason": "customer asked"}',
            *connection,
            "--codec-endpoint",
            codec_url,
            "--codec-auth",
            f"Bearer {TOKEN}",
        )
        assert code == 0, out
        history = await dev_env.client.get_workflow_handle(workflow_id).fetch_history()
        pause = [
            e.workflow_execution_signaled_event_attributes.input.payloads[0]
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
            and e.workflow_execution_signaled_event_attributes.signal_name == "pause"
        ]
        assert len(pause) == 1 and pause[0].metadata["encoding"] == ENCODING
        assert b"customer asked" not in pause[0].SerializeToString()
        decoded = (await EncryptionCodec(parse_keys(KEYS)).decode([pause[0]]))[0]
        assert json.loads(decoded.data) == {"reason": "customer asked"}
    finally:
        await dev_env.client.get_workflow_handle(workflow_id).terminate("test finished")


def _decoded_text(cli_json: str) -> str:
    """The CLI's JSON output with every payload's base64 `data` decoded, to search it as text."""
    texts = [cli_json]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("data"), str):
                try:
                    texts.append(base64.b64decode(node["data"]).decode(errors="replace"))
                except ValueError:
                    pass
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    try:
        walk(json.loads(cli_json))
    except ValueError:
        pass
    return "\n".join(texts)


def test_payload_metadata_survives_the_json_round_trip():
    """The protocol's proto3 JSON carries metadata values as base64: the marker must survive it."""
    from google.protobuf import json_format

    payload = Payload(metadata={"encoding": ENCODING}, data=b"x")
    assert json_format.Parse(json_format.MessageToJson(payload), Payload()) == payload
