"""The shipped Vietnamese catalog: complete for the doctor and the technician's commands,
and compiled from its .po."""

from __future__ import annotations

import ast
import gettext
import json
import re
from pathlib import Path
from types import ModuleType
from typing import cast

import agent.cli.doctor
import agent.cli.report
import agent.cli.technician
import agent.cli.timeline
from agent.cli.i18n import DOMAIN, LOCALE_DIR

CATALOG = LOCALE_DIR / "vi/LC_MESSAGES"


def _templates(module: ModuleType, function: str) -> set[str]:
    assert module.__file__ is not None
    return _templates_in(Path(module.__file__), function)


def _templates_in(source: Path, function: str) -> set[str]:
    tree = ast.parse(source.read_text(encoding="utf-8"))
    # cast: a message template is a string literal; ast.Constant.value is any constant's type
    return {cast(str, node.args[0].value) for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == function and isinstance(node.args[0], ast.Constant)}


def _doctor_templates() -> set[str]:
    """Every module of the doctor package: its checks are grouped by subsystem."""
    return {template for package in agent.cli.doctor.__path__
            for source in Path(package).glob("*.py")
            for template in _templates_in(source, "msg")}


def _technician_templates() -> set[str]:
    return _templates(agent.cli.technician, "_")


def _report_templates() -> set[str]:
    return _templates(agent.cli.report, "_") | _templates(agent.cli.timeline, "_")


def _po_entries() -> dict[str, str]:
    text = (CATALOG / f"{DOMAIN}.po").read_text(encoding="utf-8")
    pairs = re.findall(r'^msgid (".*")\nmsgstr (".*")$', text, flags=re.MULTILINE)
    return {json.loads(msgid): json.loads(msgstr) for msgid, msgstr in pairs if msgid != '""'}


def test_every_technician_message_has_a_vietnamese_translation() -> None:
    vietnamese = gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=["vi"])
    templates = _technician_templates()
    assert len(templates) > 30
    assert {t for t in templates if vietnamese.gettext(t) == t} <= {"MQTT: {state}"}


def test_every_doctor_message_has_a_vietnamese_translation() -> None:
    vietnamese = gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=["vi"])
    templates = _doctor_templates()
    assert len(templates) > 50
    worded = {t for t in templates if re.search(r"[a-z]", re.sub(r"\{\w+\}", "", t))}
    untranslated = {t for t in worded if vietnamese.gettext(t) == t}
    assert untranslated <= {"`sudo apt install rtl-sdr`"}


def test_every_report_message_has_a_vietnamese_translation() -> None:
    vietnamese = gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=["vi"])
    templates = _report_templates()
    assert len(templates) > 20
    assert {t for t in templates if vietnamese.gettext(t) == t} == set()


def test_translations_keep_their_placeholders() -> None:
    for msgid, msgstr in _po_entries().items():
        assert set(re.findall(r"\{\w+\}", msgid)) == set(re.findall(r"\{\w+\}", msgstr)), msgid


def test_compiled_catalog_matches_its_source() -> None:
    entries = _po_entries()
    assert set(entries) == _doctor_templates() | _technician_templates() | _report_templates()
    vietnamese = gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=["vi"])
    assert {msgid: vietnamese.gettext(msgid) for msgid in entries} == entries


def test_vietnamese_locale_names_select_the_catalog() -> None:
    for language in ("vi_VN.UTF-8", "vi_VN", "vi"):
        catalog = gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=[language])
        assert catalog.gettext("Clock") == "Đồng hồ"
    english = gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=["en_US"],
                                  fallback=True)
    assert english.gettext("Clock") == "Clock"
