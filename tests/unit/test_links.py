"""The customers' links: opaque, short, signed, rotatable; and where they are kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.links import TOKEN_LENGTH, CaseLinks, LinkSigner, parse_link_keys
from runtime.settings import ConfigError
from starter.cli.devstack import local_link_key
from tests.helpers.database import sqlite_database

OLD, NEW = b"old-link-key-0123456789", b"new-link-key-0123456789"


def test_a_token_is_opaque_url_safe_and_fits_the_contract() -> None:
    link_id, token = LinkSigner([OLD]).token_for("dunning-sub_1MowQVLkdIwHu7ixeRlqHVzs@20261121T053942Z")
    assert len(token) == TOKEN_LENGTH <= 56
    assert token.startswith(link_id)
    assert "sub_" not in token and "dunning" not in token
    assert all(c.isalnum() or c in "-_" for c in token)


def test_the_same_case_always_gets_the_same_link_and_another_case_another() -> None:
    signer = LinkSigner([OLD])
    assert signer.token_for("case-a") == signer.token_for("case-a")
    assert signer.token_for("case-a") != signer.token_for("case-b")


def test_rotation_keeps_links_already_sent_working() -> None:
    _, sent_before = LinkSigner([OLD]).token_for("case-a")
    rotated = LinkSigner([NEW, OLD])
    assert rotated.link_id_of(sent_before) == sent_before[:16]
    _, sent_after = rotated.token_for("case-a")
    assert sent_after != sent_before and rotated.link_id_of(sent_after) == sent_after[:16]
    # Once the old key is dropped, its links stop verifying.
    assert LinkSigner([NEW]).link_id_of(sent_before) is None


@given(st.text(min_size=0, max_size=80))
def test_nothing_but_a_signed_token_verifies(candidate: str) -> None:
    assert LinkSigner([OLD]).link_id_of(candidate) is None


def test_an_altered_character_anywhere_fails() -> None:
    signer = LinkSigner([OLD])
    _, token = signer.token_for("case-a")
    for index in range(len(token)):
        altered = token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1 :]
        assert signer.link_id_of(altered) is None, index


def test_form_secrets_are_bound_to_the_link_the_form_and_the_state() -> None:
    signer = LinkSigner([OLD])
    secret = signer.form_secret("link1", "more-time", "0")
    assert signer.form_secret_ok(secret, "link1", "more-time", "0")
    assert not signer.form_secret_ok(secret, "link1", "more-time", "1")  # stale form: one extension later
    assert not signer.form_secret_ok(secret, "link1", "cancel", "0")
    assert not signer.form_secret_ok(secret, "link2", "more-time", "0")


def test_keys_are_required_and_long_enough() -> None:
    with pytest.raises(ConfigError, match="DUNNING_LINK_KEYS is not set"):
        LinkSigner(parse_link_keys(""))
    with pytest.raises(ConfigError, match="key 2 has 5 characters"):
        parse_link_keys("a-long-enough-key-123, short")
    assert parse_link_keys(" new-link-key-0123456789 ,old-link-key-0123456789") == [NEW, OLD]


async def test_a_link_is_remembered_once_per_case_and_found_by_its_token(tmp_path: Path) -> None:
    links = CaseLinks(LinkSigner([OLD]), "https://pay.example.com/", sqlite_database(tmp_path))
    first = await links.issue(case_id="case-a", workflow_id="dunning-sub_a", run_id="run-1", customer_id="cus_a")
    again = await links.issue(case_id="case-a", workflow_id="dunning-sub_a", run_id="run-2", customer_id="cus_a")
    assert first == again and first.startswith("https://pay.example.com/c/")
    record = await links.find(first.rsplit("/", 1)[1])
    assert record is not None
    assert (record.case_id, record.workflow_id, record.run_id, record.customer_id) == ("case-a", "dunning-sub_a", "run-2", "cus_a")
    assert record.update_clicked_at is None
    await links.update_clicked(record.link_id)
    clicked = await links.find(first.rsplit("/", 1)[1])
    assert clicked is not None and clicked.update_clicked_at is not None
    assert await links.find("A" * TOKEN_LENGTH) is None


def test_the_local_stack_makes_one_link_key_and_keeps_it(tmp_path: Path) -> None:
    key = local_link_key(tmp_path)
    assert len(key) >= 32 and local_link_key(tmp_path) == key
    assert (tmp_path / "link-key").stat().st_mode & 0o077 == 0
