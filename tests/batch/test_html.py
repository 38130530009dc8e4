"""HTML drafts: the visible text, and rewrites written back into the original markup."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coach.batch.html import html_to_text, rewrite_markup
from coach.models import Kind, ReviewRequest
from coach.service import ReviewService

TABLE_EMAIL = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Quick hello</title>
<style>p { margin: 0 0 12px; } .foot a { color: #999; }</style></head>
<body style="margin:0">
<table width="100%" cellpadding="0" cellspacing="0" role="presentation"><tr><td align="center">
 <table width="600" class="main"><tr><td style="padding:24px;font-family:Arial">
  <p style="font-size:15px">Hi {{first_name}},</p>
  <p style="font-size:15px">I noticed {{company}} is growing fast &mdash; congrats! We help teams
     like <b>yours</b> cut onboarding time by 40%.</p>
  <p style="font-size:15px">Could you introduce me to your head of procurement?
     <a href="https://x.io/book?u={{contact.id}}&amp;src=mail">Book a call</a> this week.</p>
  <p style="font-size:15px">Best,<br>Sam</p>
 </td></tr>
 <tr><td class="foot" style="font-size:11px;color:#999">
  <a href="https://x.io/unsub?u={{contact.id}}">Unsubscribe</a> &middot; *|LIST:ADDRESS|*
 </td></tr></table>
</td></tr></table>
<!-- open pixel --><img src="https://x.io/o.gif?u={{contact.id}}" width="1" height="1" alt="">
<script>var tracked = "<p>not text</p>";</script>
</body></html>
"""

LIST_EMAIL = """<div dir="ltr">
<div>Hey *|FNAME|*,</div>
<div><br></div>
<div>Three things I&rsquo;ve been working on at %COMPANY%:</div>
<ul>
  <li>A guide for [First Name]&#39;s team &amp; partners</li>
  <li>Faster <span style="color:red">onboar</span>ding, see
      <a href="https://example.com/guide?ref={{ contact.firstname }}">the guide</a></li>
  <li>Pricing for {first_name} at $40 a seat</li>
</ul>
<div>Want a demo? Reply by 12/05.</div>
<div>Cheers,<br>Alex<br>Acme Inc.</div>
</div>
"""

ENTITY_EMAIL = (
    "<p>Hi&nbsp;&#123;&#123;first_name&#125;&#125;,</p>"
    "<p>We   sell\n\tsoftware.&nbsp; Buy   it <i>now</i>!</p>"
    "<p>Call me at 3pm &ndash; or <a href='mailto:sam@x.io'>email</a>.</p>"
)

HEBREW_EMAIL = (
    '<html dir="rtl"><body><p>שלום {{first_name}},</p>'
    "<p>ראיתי את ההרצאה שלך בכנס. אנחנו מוכרים תוכנה מצוינת.</p>"
    '<p><a href="https://x.co.il/?id={{contact.id}}">לפרטים</a></p></body></html>'
)

TEMPLATES = [TABLE_EMAIL, LIST_EMAIL, ENTITY_EMAIL, HEBREW_EMAIL]
MERGE = re.compile(r"\{\{.*?\}\}|\{[a-z_]+\}|\*\|[A-Z:]+\|\*|%[A-Z]+%|\[First Name\]")


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, str, tuple[tuple[str, str | None], ...]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(("start", tag, tuple(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(("start", tag, tuple(attrs)))

    def handle_endtag(self, tag: str) -> None:
        self.tags.append(("end", tag, ()))


def tags(markup: str) -> list[tuple[str, str, tuple[tuple[str, str | None], ...]]]:
    parser = _Tags()
    parser.feed(markup)
    parser.close()
    return parser.tags


def is_subsequence(small: list[object], big: list[object]) -> bool:
    it = iter(big)
    return all(any(x == y for y in it) for x in small)


def norm(text: str) -> str:
    return " ".join(text.split())


def assert_keeps_markup(markup: str, rewritten: str, out: str) -> None:
    assert norm(html_to_text(out)) == norm(rewritten)
    assert is_subsequence(tags(markup), tags(out))  # type: ignore[arg-type]
    # every attribute (links, merge fields in hrefs) survives byte for byte
    for attr in re.findall(r'\s[a-z-]+=("[^"]*"|\'[^\']*\')', markup):
        assert attr in out


# --- html_to_text -------------------------------------------------------------------------


def test_visible_text_of_a_table_email() -> None:
    assert html_to_text(TABLE_EMAIL) == (
        "Hi {{first_name}},\n\n"
        "I noticed {{company}} is growing fast — congrats! We help teams like yours cut "
        "onboarding time by 40%.\n\n"
        "Could you introduce me to your head of procurement? Book a call this week.\n\n"
        "Best,\nSam\n\n"
        "Unsubscribe · *|LIST:ADDRESS|*"
    )


def test_hidden_parts_never_reach_the_text() -> None:
    text = html_to_text(TABLE_EMAIL)
    for hidden in ("Quick hello", "margin", "open pixel", "tracked", "not text"):
        assert hidden not in text


def test_lists_divs_and_entities() -> None:
    assert html_to_text(LIST_EMAIL) == (
        "Hey *|FNAME|*,\n"
        "Three things I’ve been working on at %COMPANY%:\n\n"
        "A guide for [First Name]'s team & partners\n"
        "Faster onboarding, see the guide\n"
        "Pricing for {first_name} at $40 a seat\n\n"
        "Want a demo? Reply by 12/05.\n"
        "Cheers,\nAlex\nAcme Inc."
    )


def test_entity_encoded_merge_field_and_whitespace_collapse() -> None:
    assert html_to_text(ENTITY_EMAIL) == (
        "Hi {{first_name}},\n\nWe sell software. Buy it now!\n\nCall me at 3pm – or email."
    )


def test_pre_keeps_its_whitespace() -> None:
    assert html_to_text("<p>a   b</p><pre>x   y\n  z</pre>") == "a b\n\nx   y\n  z"


def test_br_lines_and_blank_input() -> None:
    assert html_to_text("one<br>two<br><br>three") == "one\ntwo\n\nthree"
    assert html_to_text("") == ""
    assert html_to_text("<p> </p><div>\n</div>") == ""


# --- rewrite_markup -----------------------------------------------------------------------


@pytest.mark.parametrize("markup", TEMPLATES)
def test_unchanged_text_gives_the_original_bytes(markup: str) -> None:
    assert rewrite_markup(markup, html_to_text(markup)) == markup


@pytest.fixture(scope="module")
def service() -> ReviewService:
    return ReviewService()


@pytest.mark.parametrize("markup", TEMPLATES)
def test_rule_engine_rewrite_keeps_tags_links_and_merge_fields(
    markup: str, service: ReviewService
) -> None:
    text = html_to_text(markup)
    review = service.review_sync(ReviewRequest(text=text, kind=Kind.template))
    assert review.rewrite is not None
    rewritten = review.rewrite.text
    assert norm(rewritten) != norm(text)
    out = rewrite_markup(markup, rewritten)
    assert_keeps_markup(markup, rewritten, out)
    # The engine keeps the merge fields it recognises; each one it kept is in the markup, and
    # so is every merge field inside an attribute (checked in assert_keeps_markup).
    kept = MERGE.findall(rewritten)
    assert kept
    visible = html_to_text(out)
    for field in kept:
        assert field in visible


def test_untouched_text_keeps_entities_and_inserted_text_is_escaped() -> None:
    markup = "<p>It&rsquo;s <b>great</b> &amp; cheap.</p>"
    out = rewrite_markup(markup, "It’s great & cheap. <script>alert(1)</script> {{name}}")
    assert out.startswith("<p>It&rsquo;s <b>great</b> &amp; cheap.")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; {{name}}" in out
    assert "<script>" not in out


def test_deleted_text_leaves_its_tags_empty() -> None:
    markup = '<p>Keep this.</p><p><b>Drop</b> <a href="https://x.io">all of it</a>.</p>'
    out = rewrite_markup(markup, "Keep this.")
    assert out == '<p>Keep this.</p><p><b></b><a href="https://x.io"></a></p>'


def test_new_paragraph_goes_after_the_block_with_its_style() -> None:
    markup = '<p class="x" style="color:red">Hello there.</p><p class="x">See you.</p>'
    out = rewrite_markup(markup, "Hello there.\n\nA new & better line.\n\nSee you.")
    assert out == (
        '<p class="x" style="color:red">Hello there.</p>'
        '<p class="x" style="color:red">A new &amp; better line.</p>'
        '<p class="x">See you.</p>'
    )


def test_insertion_after_a_link_lands_outside_it() -> None:
    markup = '<p>Read <a href="https://x.io">the guide</a> today.</p>'
    out = rewrite_markup(markup, "Read the guide [[OFFER: an intro]] today.")
    assert out == '<p>Read <a href="https://x.io">the guide</a> [[OFFER: an intro]] today.</p>'


def test_replaced_word_keeps_its_formatting_and_punctuation_edit_is_minimal() -> None:
    markup = "<p>Hi &#123;&#123;first_name&#125;&#125;, <b>buy</b> now.</p>"
    out = rewrite_markup(markup, "Hi {{first_name}}! <b> try now.")
    # the comma alone is replaced: the entity-encoded merge field keeps its bytes
    assert out == "<p>Hi &#123;&#123;first_name&#125;&#125;! &lt;b&gt; try <b></b>now.</p>"
    assert html_to_text(out) == "Hi {{first_name}}! <b> try now."
    out = rewrite_markup("<p>Please <b>buy</b> now.</p>", "Please try now.")
    assert "<b> try </b>" in out
    assert html_to_text(out) == "Please try now."


@pytest.mark.parametrize(
    ("markup", "rewritten"),
    [
        ("<p>AT&T &unknown; &copy2020 &ampx</p>", "AT&X &unknowN; ©2021 &y"),
        ("<P>a < b <B>c</B> &gt; d<BR>e", "a < b C > d\ne!"),
        ("<p>unclosed <b>bold <i>it<p>next<div>div", "unclosed bold it next\n\nnew div"),
        ("<head><title>T</title><body>no head end<p>x</p>", "no end\n\nx y"),
        ("plain {{first_name}} text", "plain {{first_name}}, more text\n\nEnd."),
    ],
)
def test_messy_markup_round_trips(markup: str, rewritten: str) -> None:
    assert rewrite_markup(markup, html_to_text(markup)) == markup
    out = rewrite_markup(markup, rewritten)
    assert norm(html_to_text(out)) == norm(rewritten)
    assert is_subsequence(tags(markup), tags(out))  # type: ignore[arg-type]


def test_new_line_inside_a_cell_becomes_a_br() -> None:
    markup = "<table><tr><td>First line.</td></tr><tr><td>Last line.</td></tr></table>"
    out = rewrite_markup(markup, "First line.\nMiddle line.\nLast line.")
    assert html_to_text(out) == "First line.\nMiddle line.\nLast line."
    assert is_subsequence(tags(markup), tags(out))  # type: ignore[arg-type]


def test_text_for_markup_without_text_goes_into_the_body() -> None:
    out = rewrite_markup("<html><body><img src='a.png'></body></html>", "Hello {{name}}")
    assert out == "<html><body><img src='a.png'><p>Hello {{name}}</p></body></html>"


_EXTRA = st.sampled_from(
    ["{{first_name}}", "[[OFFER: an intro]]", "*|FNAME|*", "new", "words,", "\n\n", "\n", "&"]
)


@st.composite
def edited(draw: st.DrawFn) -> tuple[str, str]:
    """A template and a rewrite of its text: words dropped, added, moved; lines added."""
    markup = draw(st.sampled_from(TEMPLATES))
    words = html_to_text(markup).replace("\n", " \n ").split(" ")
    out: list[str] = []
    for word in words:
        action = draw(st.integers(0, 9))
        if action == 0:
            continue
        if action == 1:
            out.append(draw(_EXTRA))
        out.append(word)
    if draw(st.booleans()) and len(out) > 4:
        i = draw(st.integers(0, len(out) - 2))
        out.insert(draw(st.integers(0, len(out) - 1)), out.pop(i))
    rewritten = " ".join(out).strip() or "x"
    return markup, rewritten


@settings(max_examples=100, deadline=None)
@given(edited())
def test_round_trip_property(case: tuple[str, str]) -> None:
    markup, rewritten = case
    assert_keeps_markup(markup, rewritten, rewrite_markup(markup, rewritten))
