"""The e2e chat test's comparison of the engine's answer with the page: math spans are left out of it."""
from __future__ import annotations

from support.chat_browser import shown_as_markdown

ANSWER = "pt S q di Qg all from se d may loo G lon $ ho Q sa %othe ea ab h would way $ then fasP sa othe her quest"


def test_an_answer_shown_as_is_matches() -> None:
    assert shown_as_markdown(ANSWER, "chat: " + ANSWER + " (copy)")


def test_text_inside_math_that_latex_drops_does_not_fail_the_match() -> None:
    # KaTeX reads '%' as a comment: the rest of the math span is not on the page (the failure seen in CI).
    shown = "pt S q di Qg all from se d may loo G lon hoQsa then fasP sa othe her quest"
    assert shown_as_markdown(ANSWER, shown)


def test_another_answer_does_not_match() -> None:
    assert not shown_as_markdown(ANSWER, "pt S q di Qg all from se d may loo G lon hoQsa then fasP sa othe")
    assert not shown_as_markdown("too short", "too short")
