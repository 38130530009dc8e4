"""Streaming batch inputs: folders, single files, CSV, JSONL and e-mail."""

from __future__ import annotations

import csv
import json
import os
import tracemalloc
from pathlib import Path

import pytest

from coach.batch.html import html_to_text
from coach.batch.inputs import InputItem, item_rewrite_markup, iter_inputs
from coach.errors import InputError
from coach.models import MAX_TEXT_CHARS, Kind, Language

#: Merge fields of the common tools, with odd spacing and quotes that must survive untouched.
MERGE_TEXT = (
    "Hi {{first_name}}, {first_name}, %FIRSTNAME%, *|FNAME|*, [First Name] and "
    '{{ contact.firstname }} —  “quoted”  {{ name | default: "there" }}\ttab\n'
    "How is {!Contact.Company} doing?"
)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def items(*paths: Path, **options: object) -> list[InputItem]:
    return list(iter_inputs(list(paths), **options))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


# --- folders ------------------------------------------------------------------------------


def test_folder_walk_is_sorted_filtered_and_skips_hidden() -> None:
    for name in (
        "tpl/b.txt",
        "tpl/a.md",
        "tpl/sub/z.html",
        "tpl/sub/a.eml",
        "tpl/c.HTM",
        "tpl/notes.pdf",
        "tpl/data.csv",
        "tpl/.hidden.txt",
        "tpl/.git/x.txt",
        "tpl/aa/1.txt",
    ):
        body = "Subject: hi\n\nhello there\n" if name.endswith(".eml") else "<p>hello</p>"
        write(Path(name), body)
    got = items(Path("tpl/"))
    assert [i.key for i in got] == [
        "tpl/a.md",
        "tpl/aa/1.txt",
        "tpl/b.txt",
        "tpl/c.HTM",
        "tpl/sub/a.eml",
        "tpl/sub/z.html",
    ]
    assert got[0].location == {"path": "tpl/a.md"}
    assert all(i.request is not None for i in got)
    assert [i.key for i in items(Path("tpl"))] == [i.key for i in got]  # stable across runs


def test_text_files_keep_merge_fields_byte_identical(tmp_path: Path) -> None:
    write(Path("d/a.txt"), "\ufeff" + MERGE_TEXT)
    write(Path("d/b.md"), MERGE_TEXT + "\r\n")
    a, b = items(Path("d"), kind=Kind.message, language=Language.en)
    assert a.request is not None and b.request is not None
    assert a.request.text == MERGE_TEXT  # BOM dropped, nothing else
    assert b.request.text == MERGE_TEXT + "\r\n"
    assert a.request.kind is Kind.message and a.request.language is Language.en
    assert a.markup is None


def test_item_problems_become_item_errors(tmp_path: Path) -> None:
    write(Path("d/1-empty.txt"), "  \n")
    write(Path("d/2-latin1.txt"), "caf\xe9".encode("latin-1"))
    write(Path("d/3-long.txt"), "x" * (MAX_TEXT_CHARS + 1))
    write(Path("d/4-huge.md"), "y" * (MAX_TEXT_CHARS * 4 + 10))
    write(Path("d/5-ok.txt"), "Hello {{first_name}}")
    got = items(Path("d"))
    assert [i.request is None for i in got] == [True, True, True, True, False]
    assert "empty" in (got[0].error or "")
    assert got[1].error == "not valid UTF-8 (bad byte at offset 3)"
    assert "at most 20000" in (got[2].error or "")
    assert "too long" in (got[3].error or "")
    for item in got[:4]:
        assert item.error is not None and "\n" not in item.error
        assert "xxx" not in item.error and "yyy" not in item.error and "caf" not in item.error


def test_html_file_is_reviewed_as_text_with_markup_kept() -> None:
    markup = '<p>Hi {{first_name}},</p><p>See <a href="https://x.io/?u={{contact.id}}">this</a></p>'
    (item,) = items(write(Path("t.html"), markup))
    assert item.request is not None
    assert item.request.text == "Hi {{first_name}},\n\nSee this"
    assert item.markup == markup


def test_command_problems_raise() -> None:
    write(Path("x.pdf"), "x")
    write(Path("d/a.txt"), "hello")
    with pytest.raises(InputError, match="no such file"):
        iter_inputs([Path("missing")])
    with pytest.raises(InputError, match=r"cannot read \.pdf"):
        iter_inputs([Path("x.pdf")])
    with pytest.raises(InputError, match="overlaps"):
        iter_inputs([Path("d"), Path("d/a.txt")])
    with pytest.raises(InputError, match="overlaps"):
        iter_inputs([Path("d"), Path("d")])


# --- CSV ----------------------------------------------------------------------------------


def test_csv_rows_multiline_cells_bom_and_row_numbers() -> None:
    with open("leads.csv", "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "body", "other"])
        writer.writerow(["a", 'Hi {{first_name}},\n\nline two, "quoted"', "x"])
        writer.writerow(["b", "", "y"])
        writer.writerow(["c", MERGE_TEXT, "z"])
        handle.write("\r\n")  # a blank line is not a row
        writer.writerow(["d"])  # short row: the cell is missing
        writer.writerow(["e", "x" * (MAX_TEXT_CHARS + 1)])
    got = items(Path("leads.csv"), column="body")
    assert [i.key for i in got] == [f"leads.csv:row={n}" for n in range(1, 6)]
    assert got[0].location == {"path": "leads.csv", "row": 1}
    assert got[0].request is not None
    assert got[0].request.text == 'Hi {{first_name}},\n\nline two, "quoted"'
    assert got[1].request is None and got[1].error == "column 'body' is empty"
    assert got[2].request is not None and got[2].request.text == MERGE_TEXT
    assert got[3].error == "column 'body' is empty"
    assert got[4].request is None and "at most 20000" in (got[4].error or "")


def test_csv_undecodable_cell_is_an_item_error() -> None:
    write(Path("l.csv"), b"body\nfine\ncaf\xe9 au lait\nok again\n")
    got = items(Path("l.csv"), column="body")
    assert [i.error for i in got] == [None, "column 'body': not valid UTF-8", None]


def test_csv_oversized_field_does_not_stop_the_file() -> None:
    write(Path("big.csv"), "body\n" + "z" * 300_000 + "\nsmall\n")
    first, second = items(Path("big.csv"), column="body")
    assert first.request is None and "at most" in (first.error or "")
    assert second.request is not None and second.request.text == "small"


def test_csv_needs_a_known_column() -> None:
    write(Path("l.csv"), "id,body\n1,hello\n")
    with pytest.raises(InputError, match="needs --column"):
        iter_inputs([Path("l.csv")])
    with pytest.raises(InputError, match=r"no column 'text'.*'id', 'body'"):
        iter_inputs([Path("l.csv")], column="text")
    write(Path("empty.csv"), "")
    with pytest.raises(InputError, match="empty"):
        iter_inputs([Path("empty.csv")], column="body")


def test_csv_reading_is_lazy_and_memory_flat() -> None:
    row = "Hi {{first_name}}, I enjoyed your talk and wanted to ask one question. " * 3
    with open("many.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["n", "text"])
        for n in range(50_000):
            writer.writerow([n, row])
    size = os.path.getsize("many.csv")
    assert size > 10_000_000
    tracemalloc.start()
    try:
        stream = iter_inputs([Path("many.csv")], column="text")
        first = next(stream)
        for _ in range(999):
            next(stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first.key == "many.csv:row=1"
    assert peak < size / 20  # nowhere near the whole file


# --- JSONL --------------------------------------------------------------------------------


def test_jsonl_items_ids_lines_and_bad_lines() -> None:
    lines = [
        json.dumps({"id": "abc", "text": MERGE_TEXT, "kind": "message", "language": "en"}),
        "",
        json.dumps({"text": "Hello {{first_name}}", "context": {"relationship": "met"}}),
        "{not json",
        json.dumps(["a list"]),
        json.dumps({"id": "abc", "text": "again"}),
        json.dumps({"id": 7, "text": ""}),
        json.dumps({"text": "hello", "txet": "typo"}),
        json.dumps({"text": "hello", "kind": "poem"}),
        json.dumps({"id": {"x": 1}, "text": "hello"}),
    ]
    write(Path("x.jsonl"), "\ufeff" + "\n".join(lines) + "\n")
    got = items(Path("x.jsonl"))
    assert [i.key for i in got] == [
        "x.jsonl:id=abc",
        "x.jsonl:line=3",
        "x.jsonl:line=4",
        "x.jsonl:line=5",
        "x.jsonl:line=6",
        "x.jsonl:id=7",
        "x.jsonl:line=8",
        "x.jsonl:line=9",
        "x.jsonl:line=10",
    ]
    first = got[0]
    assert first.location == {"path": "x.jsonl", "id": "abc", "line": 1}
    assert first.request is not None and first.request.text == MERGE_TEXT
    assert first.request.kind is Kind.message
    second = got[1]
    assert second.request is not None and second.request.kind is Kind.template  # the default
    assert second.request.context is not None
    errors = [i.error for i in got[2:]]
    assert errors[0] is not None and errors[0].startswith("invalid JSON")
    assert errors[1] == "not a JSON object"
    assert errors[2] == "id: repeats an earlier line's id"
    assert errors[3] is not None and errors[3].startswith("text:")
    assert errors[4] == "unknown field 'txet'"
    assert errors[5] is not None and errors[5].startswith("kind:")
    assert errors[6] == "id: must be a non-empty string"
    assert all(i.request is None for i in got[2:])


# --- e-mail -------------------------------------------------------------------------------

QP_HTML_EMAIL = b"""From: Sam <sam@x.io>
To: {{email}}
Subject: =?utf-8?q?Quick_question_for_{{first=5Fname}}_=E2=80=94_caf=C3=A9?=
MIME-Version: 1.0
Content-Type: text/html; charset="utf-8"
Content-Transfer-Encoding: quoted-printable

<html><body><p>Hi {{first_name}},</p><p>I loved the caf=C3=A9 talk =E2=80=94 =
and your post about *|COMPANY|*.</p><p><a href=3D"https://x.io/?u=3D{{contact.id}}">=
Book</a></p></body></html>
"""

MULTIPART_EMAIL = b"""Subject: Hello
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="XX"

--XX
Content-Type: text/plain; charset="iso-8859-1"
Content-Transfer-Encoding: base64

SGkge3tmaXJzdF9uYW1lfX0sIGNhZukgJUZJUlNUTkFNRSU=

--XX
Content-Type: text/html; charset="utf-8"

<p>Hi {{first_name}}</p>
--XX--
"""


def test_eml_quoted_printable_html_only() -> None:
    (item,) = items(write(Path("m/a.eml"), QP_HTML_EMAIL))
    assert item.request is not None, item.error
    assert item.request.text == (
        "Quick question for {{first_name}} — café\n\n"
        "Hi {{first_name}},\n\n"
        "I loved the café talk — and your post about *|COMPANY|*.\n\n"
        "Book"
    )
    assert item.markup is not None
    assert 'href="https://x.io/?u={{contact.id}}"' in item.markup
    assert html_to_text(item.markup) == item.request.text.split("\n\n", 1)[1]


def test_eml_prefers_plain_text_and_decodes_base64_charset() -> None:
    (item,) = items(write(Path("b.eml"), MULTIPART_EMAIL))
    assert item.request is not None
    assert item.request.text == "Hello\n\nHi {{first_name}}, café %FIRSTNAME%"
    assert item.markup is None


def test_eml_without_body_is_an_item_error() -> None:
    raw = b"Subject: x\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nAAAA\n"
    (item,) = items(write(Path("c.eml"), raw))
    assert item.request is None and item.error == "the e-mail has no text or HTML body"


def test_item_rewrite_markup_drops_the_subject_of_an_email() -> None:
    (item,) = items(write(Path("a.eml"), QP_HTML_EMAIL))
    assert item.request is not None
    rewritten = item.request.text.replace("Book", "Book a call [[OFFER: an intro]]")
    out = item_rewrite_markup(item, rewritten)
    assert out is not None
    assert "Quick question" not in out
    assert out.endswith(
        '<p><a href="https://x.io/?u={{contact.id}}">Book</a> a call [[OFFER: an intro]]</p>'
        "</body></html>\n"
    )
    (plain,) = items(write(Path("p.txt"), "hello"))
    assert item_rewrite_markup(plain, "hi") is None
