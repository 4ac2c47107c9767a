"""The encryption codec: round trip, rotation, tampering, old histories, and a whole case whose
raw history (read without the keys) holds no customer or invoice data in clear text."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import History
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from dunning.models import CardUpdated, PaymentFailed, Stage
from runtime.codec import (
    ENCODING,
    KEY_ID_METADATA,
    DecryptionError,
    EncryptionCodec,
    EncryptionConfigError,
    data_converter,
    parse_keys,
)
from tests.helpers.case_harness import CaseRunner, failure


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


OLD, NEW = key(), key()


def codec(spec: str) -> EncryptionCodec:
    return EncryptionCodec(parse_keys(spec))


async def to_payloads(value: object, c: EncryptionCodec) -> list[Payload]:
    return await c.encode(pydantic_data_converter.payload_converter.to_payloads([value]))


def from_payloads(payloads: list[Payload]) -> PaymentFailed:
    return pydantic_data_converter.payload_converter.from_payloads(payloads, [PaymentFailed])[0]


SECRET = failure(invoice_id="in_S3cr3tInv01ce", message="Ada's card", hosted_invoice_url="https://pay.example/ada")


async def test_round_trip_hides_the_data_and_restores_it():
    c = codec(f"k1:{NEW}")
    encoded = await to_payloads(SECRET, c)
    assert encoded[0].metadata["encoding"] == ENCODING
    assert encoded[0].metadata[KEY_ID_METADATA] == b"k1"
    assert b"S3cr3t" not in encoded[0].SerializeToString()
    assert from_payloads(await c.decode(encoded)) == SECRET


async def test_each_encryption_uses_a_fresh_nonce():
    c = codec(f"k1:{NEW}")
    a, b = await to_payloads(SECRET, c), await to_payloads(SECRET, c)
    assert a[0].data != b[0].data


async def test_rotation_old_key_still_decrypts_new_key_encrypts():
    before = codec(f"old:{OLD}")
    written_last_month = await to_payloads(SECRET, before)

    after = codec(f"new:{NEW},old:{OLD}")
    assert from_payloads(await after.decode(written_last_month)) == SECRET
    written_now = await to_payloads(SECRET, after)
    assert written_now[0].metadata[KEY_ID_METADATA] == b"new"
    with pytest.raises(DecryptionError, match="'new'"):
        await before.decode(written_now)  # the old deployment never held the new key


@pytest.mark.parametrize("where", ["nonce", "ciphertext", "tag", "key_id"])
async def test_tampering_is_detected(where: str):
    c = codec(f"k1:{NEW},k0:{OLD}")
    payload = (await to_payloads(SECRET, c))[0]
    data = bytearray(payload.data)
    if where == "nonce":
        data[0] ^= 1
    elif where == "ciphertext":
        data[20] ^= 1
    elif where == "tag":
        data[-1] ^= 1
    else:
        payload.metadata[KEY_ID_METADATA] = b"k0"  # the key id is bound in as associated data
    payload.data = bytes(data)
    with pytest.raises(DecryptionError):
        await c.decode([payload])


async def test_a_missing_key_is_named_and_encryption_off_says_so():
    """Finding 8: the error is what the UI shows as the stuck case's task failure: it must say why."""
    written_in_2019 = await to_payloads(SECRET, codec(f"k2019:{OLD}"))
    with pytest.raises(DecryptionError) as missing:
        await codec(f"k2026:{NEW}").decode(written_in_2019)
    assert "'k2019'" in str(missing.value) and "DUNNING_ENCRYPTION_KEYS does not hold" in str(missing.value)
    assert missing.value.key_id == "k2019"

    with pytest.raises(DecryptionError) as off:
        await data_converter(None).decode(written_in_2019, [PaymentFailed])
    assert "'k2019'" in str(off.value) and "encryption is off" in str(off.value)

    # The same key id with another value: it says so rather than "tampered" only.
    with pytest.raises(DecryptionError, match="different value"):
        await codec(f"k2019:{NEW}").decode(written_in_2019)

    # Plain payloads still pass with encryption off.
    plain = pydantic_data_converter.payload_converter.to_payloads([SECRET])
    assert await data_converter(None).decode(plain, [PaymentFailed]) == [SECRET]


async def test_truncated_payload_is_rejected():
    c = codec(f"k1:{NEW}")
    payload = (await to_payloads(SECRET, c))[0]
    payload.data = payload.data[:5]
    with pytest.raises(DecryptionError):
        await c.decode([payload])


async def test_unencrypted_payloads_pass_through():
    c = codec(f"k1:{NEW}")
    plain = pydantic_data_converter.payload_converter.to_payloads([SECRET, None, 42])
    assert await c.decode(plain) == plain


@pytest.mark.parametrize(
    "spec, why",
    [
        ("nokey", "key_id:base64key"),
        (":abc", "key_id:base64key"),
        ("k1:not base64!", "not valid base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "5 bytes"),
        (f"k1:{NEW},k1:{OLD}", "listed twice"),
        (" , ", "lists no key"),
    ],
)
def test_bad_key_configuration_says_why_without_the_key(spec: str, why: str):
    with pytest.raises(EncryptionConfigError, match=why) as raised:
        parse_keys(spec)
    assert NEW not in str(raised.value) and OLD not in str(raised.value)


def test_converter_is_the_contract_one_without_keys_and_encrypts_with_them():
    plain = data_converter(None)
    assert plain.payload_converter_class is pydantic_data_converter.payload_converter_class
    assert not isinstance(plain.payload_codec, EncryptionCodec)  # nothing is encrypted without keys
    converter = data_converter(f"k1:{NEW}")
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class


# --- a whole case with the codec on the time-skipping server ---------------------------


@dataclass
class CodecEnv:
    """The session's time-skipping server seen through a client that encrypts."""

    env: WorkflowEnvironment
    client: Client

    async def sleep(self, duration) -> None:
        await self.env.sleep(duration)


def encrypting(env: WorkflowEnvironment, spec: str) -> CodecEnv:
    config = env.client.config()
    config["data_converter"] = data_converter(spec)
    return CodecEnv(env, Client(**config))


CLEAR_TEXT = [b"in_S3cr3tInv01ce", b"Ada Lovelace", b"pm_card_Pr1vate", b"pm_card_N3wCard", b"pay.example"]


def raw_history_bytes(events) -> bytes:
    return History(events=events).SerializeToString()


async def run_case(env) -> tuple[object, bytes]:
    async with CaseRunner(env) as runner:  # type: ignore[arg-type]
        runner.payments.script_card("pm_card_Pr1vate", ["expired_card"])
        case = await runner.open(
            failure(
                invoice_id="in_S3cr3tInv01ce",
                payment_method_id="pm_card_Pr1vate",
                decline_code="expired_card",
                hosted_invoice_url="https://pay.example/in_S3cr3tInv01ce",
            ),
            customer_id="cus_codec",
        )
        await case.wait_days(1)
        await case.signal("card_updated", CardUpdated(payment_method_id="pm_card_N3wCard", event_id="evt_card"))
        status = await case.result()
        # Read the stored history with a client that holds no key: what the server (and its DB) sees.
        plain_handle = env.env.client.get_workflow_handle(case.handle.id) if isinstance(env, CodecEnv) else case.handle
        history = await plain_handle.fetch_history()
        return status, raw_history_bytes(history.events)


async def test_whole_case_history_holds_no_customer_data_in_clear(time_env):
    status, raw = await run_case(encrypting(time_env, f"k1:{NEW}"))
    # The case works exactly as without the codec…
    assert status.stage is Stage.RECOVERED
    assert [(a.invoice_id, a.result.status) for a in status.attempts][-1] == ("in_S3cr3tInv01ce", "succeeded")
    # …and the server stores none of its customer or invoice data readably.
    leaks = [s.decode() for s in CLEAR_TEXT if s in raw]
    assert leaks == []
    assert ENCODING in raw


async def test_without_keys_the_same_history_is_readable(time_env):
    """The control for the test above: it would see the data if it were there."""
    _, raw = await run_case(time_env)
    assert [s for s in CLEAR_TEXT if s in raw] == CLEAR_TEXT
    assert ENCODING not in raw
