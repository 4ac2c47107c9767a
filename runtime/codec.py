"""Encryption of everything the case puts into Temporal: an AES-GCM payload codec.

With `DUNNING_ENCRYPTION_KEYS` set, every payload (workflow input, signals, activity
inputs and results, query results, timer and activity summaries, failure messages) is
encrypted before it leaves the process, so the Temporal server, its database and anyone
reading raw histories see ciphertext only. Search attributes stay readable: they are the
index operators filter cases by (stage, customer id, amount), not customer data.

    DUNNING_ENCRYPTION_KEYS="k2026b:<base64 32 bytes>,k2026a:<base64 32 bytes>"

The first key encrypts; every listed key decrypts, so a key is rotated by putting the new
one first and keeping the old one until no open case (and no history you still want to read)
uses it. Each payload names its key id in its metadata. Payloads without the encryption
marker pass through untouched, so histories written before encryption was switched on
still read. A payload that was altered, or whose key is unknown, fails loudly: it is never
returned half-decoded, and the error names the key id it needs. With encryption switched off
(no keys), an encrypted payload fails with the same kind of message ("encryption is off")
instead of the converter's bare "Failed decoding arguments": that message is what the Temporal
UI shows as the case's workflow task failure, and what the worker logs.

Make a key: `python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from collections.abc import Sequence

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

ENV_VAR = "DUNNING_ENCRYPTION_KEYS"
ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
NONCE_BYTES = 12
_KEY_SIZES = (16, 24, 32)

log = structlog.get_logger("dunning.codec")


class EncryptionConfigError(ValueError):
    """`DUNNING_ENCRYPTION_KEYS` is malformed. The message names the entry, never the key."""


class DecryptionError(ValueError):
    """An encrypted payload could not be decrypted: tampered with, or its key is not configured.

    `key_id` is the key the payload names (what the operator must add back)."""

    def __init__(self, message: str, key_id: str | None = None) -> None:
        super().__init__(message)
        self.key_id = key_id


def payload_key_id(payload: Payload) -> str | None:
    """The key id an encrypted payload names; None for a payload that is not encrypted."""
    if payload.metadata.get("encoding") != ENCODING:
        return None
    return payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")


def _refuse(message: str, key_id: str | None) -> DecryptionError:
    """The error, logged once where it happens: in the worker that is the line saying why a case
    is stuck (the SDK's own log line only says that an activation failed)."""
    log.error("payload cannot be decrypted", key_id=key_id, reason=message)
    return DecryptionError(message, key_id)


def parse_keys(spec: str) -> list[tuple[str, bytes]]:
    """`id:base64key,id:base64key` → [(id, key)], first one the encryption key."""
    keys: list[tuple[str, bytes]] = []
    for position, entry in enumerate((e.strip() for e in spec.split(",")), start=1):
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not sep or not key_id:
            raise EncryptionConfigError(f"{ENV_VAR}: entry {position} must be `key_id:base64key`")
        if any(key_id == existing for existing, _ in keys):
            raise EncryptionConfigError(f"{ENV_VAR}: key id {key_id!r} is listed twice")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise EncryptionConfigError(f"{ENV_VAR}: key {key_id!r} is not valid base64") from None
        if len(key) not in _KEY_SIZES:
            raise EncryptionConfigError(
                f"{ENV_VAR}: key {key_id!r} is {len(key)} bytes; AES-GCM needs 16, 24 or 32 (32 recommended)"
            )
        keys.append((key_id, key))
    if not keys:
        raise EncryptionConfigError(f"{ENV_VAR} is set but lists no key")
    return keys


class EncryptionCodec(PayloadCodec):
    """AES-GCM per payload: a fresh 96-bit nonce each time, the key id bound in as associated data."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise EncryptionConfigError("at least one key is needed")
        self.encrypt_key_id = keys[0][0]
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys}

    @classmethod
    def from_keys(cls, keys: SecretStr | str | None) -> EncryptionCodec | None:
        """The codec for `DUNNING_ENCRYPTION_KEYS` (`Settings.dunning_encryption_keys`); None when unset."""
        spec = (keys.get_secret_value() if isinstance(keys, SecretStr) else keys or "").strip()
        return cls(parse_keys(spec)) if spec else None

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.encrypt_key_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        key_id = payload_key_id(payload)
        if key_id is None:
            return payload  # written before encryption was on (or by another codec): pass through
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            held = ", ".join(repr(k) for k in self._ciphers)
            raise _refuse(
                f"payload encrypted with key {key_id!r}, which {ENV_VAR} does not hold (it holds {held}): "
                f"add that key back to {ENV_VAR}",
                key_id,
            )
        data = payload.data
        if len(data) < NONCE_BYTES + 16:  # nonce + GCM tag at the least
            raise _refuse(f"payload encrypted with key {key_id!r} is truncated", key_id)
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise _refuse(
                f"payload encrypted with key {key_id!r} failed authentication: altered, or {ENV_VAR} "
                f"gives {key_id!r} a different value than the one it was encrypted with",
                key_id,
            ) from None
        decoded = Payload()
        decoded.ParseFromString(plain)
        return decoded


class EncryptionOffCodec(PayloadCodec):
    """Encryption switched off: payloads leave as they are, but an encrypted one arriving (a case
    started while encryption was on) fails with the key id it needs, not "Failed decoding
    arguments" from a converter that has never heard of `binary/encrypted`."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        for payload in payloads:
            key_id = payload_key_id(payload)
            if key_id is not None:
                raise _refuse(
                    f"payload encrypted with key {key_id!r}, but encryption is off: {ENV_VAR} is not set "
                    f"(set it with the key {key_id!r} to read this case)",
                    key_id,
                )
        return list(payloads)


def data_converter(keys: SecretStr | str | None = None) -> DataConverter:
    """The contract's pydantic converter; with keys set, also the codec, and failure messages
    and stack traces moved into (encrypted) payloads so they carry no customer data either.
    Without keys, the pydantic converter with a codec that only recognises encrypted payloads
    and refuses them by name (`EncryptionOffCodec`)."""
    codec = EncryptionCodec.from_keys(keys)
    if codec is None:
        return dataclasses.replace(pydantic_data_converter, payload_codec=EncryptionOffCodec())
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
