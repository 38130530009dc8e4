"""Merge fields of common tools are recognised as slots and classified."""

from __future__ import annotations

import pytest

from coach.text.merge_fields import (
    MergeField,
    field_kind,
    find_merge_fields,
    normalise_field_name,
)


def only_field(text: str) -> MergeField:
    fields = find_merge_fields(text)
    assert len(fields) == 1, fields
    return fields[0]


@pytest.mark.parametrize(
    ("raw", "syntax", "name"),
    [
        ("{{first_name}}", "handlebars", "firstname"),
        ("{{ contact.firstname }}", "handlebars", "firstname"),
        ("*|FNAME|*", "mailchimp", "fname"),
        ("{!Contact.FirstName}", "salesforce", "firstname"),
        ("[First Name]", "bracket", "firstname"),
        ("%FIRSTNAME%", "percent", "firstname"),
        ('{{ first_name | default: "there" }}', "handlebars", "firstname"),
        ("{{ company.name | upcase }}", "handlebars", "name"),
        ("[שם פרטי]", "bracket", "שםפרטי"),
    ],
)
def test_each_syntax_is_found_with_offsets(raw: str, syntax: str, name: str) -> None:
    text = f"Hi {raw}, good to see you."
    field = only_field(text)
    assert field.raw == raw
    assert field.syntax == syntax
    assert field.name == name
    assert (field.start, field.end) == (3, 3 + len(raw))
    assert text[field.start : field.end] == raw


@pytest.mark.parametrize(
    "raw",
    [
        "{{first_name}}",
        "{{ contact.firstname }}",
        "*|FNAME|*",
        "{!Contact.FirstName}",
        "[First Name]",
        "%FIRSTNAME%",
        '{{ first_name | default: "there" }}',
    ],
)
def test_first_name_in_every_syntax_is_identity(raw: str) -> None:
    assert only_field(f"Hello {raw}!").kind == "identity"


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("{{recent_milestone}}", "personal"),
        ("{{topic}}", "personal"),
        ("{{their_recent_post}}", "personal"),
        ("*|LAST_EVENT|*", "personal"),
        ("{{ contact.current_project }}", "personal"),
        ("{{company}}", "identity"),
        ("%COMPANY%", "identity"),
        ("*|COMPANY|*", "identity"),
        ("[Company]", "identity"),
        ("{{ contact.company }}", "identity"),
        ("{!Account.Name}", "identity"),
        ("{{job_title}}", "identity"),
        ("[חברה]", "identity"),
        ("{{favourite_colour}}", "other"),
    ],
)
def test_identity_versus_personal(raw: str, kind: str) -> None:
    assert only_field(f"About {raw} today").kind == kind


def test_liquid_filter_does_not_change_the_name() -> None:
    plain = only_field("{{ recent_milestone }}")
    filtered = only_field('{{ recent_milestone | default: "your launch" }}')
    assert filtered.name == plain.name == "recentmilestone"
    assert filtered.kind == "personal"


@pytest.mark.parametrize(
    ("raw", "label", "kind"),
    [
        ("[[OFFER: an intro to a designer I trust]]", "offer", "other"),
        ("[[DETAIL: their news]]", "detail", "personal"),
        ("[[THEIR BUSINESS: what they sell]]", "their business", "personal"),
        ("[[QUESTION: about their launch]]", "question", "other"),
    ],
)
def test_rewrite_slots_are_one_field(raw: str, label: str, kind: str) -> None:
    text = f"Thanks! {raw} Talk soon."
    field = only_field(text)
    assert field.syntax == "slot"
    assert field.raw == raw
    assert field.name == label
    assert field.kind == kind


def test_several_fields_in_order() -> None:
    text = "Hi {{first_name}}, loved *|RECENT_POST|* at %COMPANY%. [[OFFER: an intro]]"
    fields = find_merge_fields(text)
    assert [f.raw for f in fields] == [
        "{{first_name}}",
        "*|RECENT_POST|*",
        "%COMPANY%",
        "[[OFFER: an intro]]",
    ]
    assert [f.kind for f in fields] == ["identity", "personal", "identity", "other"]
    assert all(text[f.start : f.end] == f.raw for f in fields)
    assert [f.start for f in fields] == sorted(f.start for f in fields)


@pytest.mark.parametrize(
    "text",
    [
        'He wrote "recieve" [sic] in the brief.',
        "Get 50% off and another 20% at checkout.",
        "Margins moved from 50%-20% last year; growth 10%.",
        "See footnote [1] and [2].",
        "The list [a, b, c] is short.",
        "Call me {maybe} tomorrow.",
        "A single * | bar | * is not a field.",
        "No fields at all, just text.",
        "שלום דנה, 50% מהלקוחות [sic] חזרו.",
    ],
)
def test_no_false_positives(text: str) -> None:
    assert find_merge_fields(text) == []


def test_empty_handlebars_is_not_a_field() -> None:
    assert find_merge_fields("{{ }} and {{}}") == []


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("{{ contact.firstname }}", "firstname"),
        ("{{First_Name}}", "firstname"),
        ("*|FNAME|*", "fname"),
        ("{!Lead.Company}", "company"),
        ("[First Name]", "firstname"),
        ('{{ recent_milestone | default: "x" }}', "recentmilestone"),
    ],
)
def test_normalise_field_name(raw: str, name: str) -> None:
    assert normalise_field_name(raw) == name


def test_field_kind_on_normalised_names() -> None:
    assert field_kind("firstname") == "identity"
    assert field_kind("company") == "identity"
    assert field_kind("recentmilestone") == "personal"
    assert field_kind("zzz") == "other"
