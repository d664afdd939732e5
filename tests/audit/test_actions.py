"""The audit filter suggests every action the code can write, from a list kept with it."""

import re
from pathlib import Path

from audit.actions import KNOWN_ACTIONS

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "accounts",
    "audit",
    "configuration",
    "dicomnet",
    "jobs",
    "portal",
    "studies",
    "tenants",
)
LITERAL = re.compile(r'(?:action|audit_action)\s*=\s*"([a-z_]+(?:\.[a-z_]+)+|logout)"')
DIMSE = re.compile(r'action=f"dimse\.\{operation\}"')


def written_actions() -> set[str]:
    found: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            found |= set(LITERAL.findall(text))
            if DIMSE.search(text):
                found |= {"dimse.find", "dimse.get", "dimse.move"}
    return found


def test_every_action_the_code_writes_is_known():
    written = written_actions()
    assert len(written) > 40
    assert written - set(KNOWN_ACTIONS) == set()


def test_the_page_offers_them_without_reading_the_log(client_as):
    client = client_as("admin")
    page = client.get("/audit/").content.decode()
    for action in ("node.retrieve", "study.download", "dicomweb.retrieve", "logout"):
        assert f'<option value="{action}">' in page
