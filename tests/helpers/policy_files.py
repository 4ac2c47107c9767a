"""Policy files for tests: a valid one, and ways to spoil a single line of it."""

from __future__ import annotations

from pathlib import Path

LADDER = """
[[notify]]
at = "PT0S"
channels = ["email", "in_app"]
template = "payment_failed"

[[notify]]
at = "P10D"
channels = ["email"]
template = "final_notice"

[[notify]]
on = "suspended"
channels = ["email"]
template = "suspended"
"""


#: Pay-or-thank-you: the first message at once, a thank-you on recovery (fault and end-to-end runs).
RECOVERY_LADDER = """
[[notify]]
at = "PT0S"
channels = ["email", "in_app"]
template = "payment_failed"

[[notify]]
on = "recovered"
channels = ["email"]
template = "recovered"
"""


def policy_text(name: str = "default", ladder: str = LADDER, **fields: str) -> str:
    """A valid policy file; `fields` replace or add top-level lines (value as TOML text)."""
    top = {
        "name": f'"{name}"',
        "retry_after": '["P1D", "P3D", "P7D"]',
        "grace": '"P14D"',
        "cancel_after_suspension": '"P30D"',
        **fields,
    }
    return "".join(f"{key} = {value}\n" for key, value in top.items() if value is not None) + ladder


def write(folder: Path, text: str, name: str = "default") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path
