"""A stand-in for BioChatter Light's app tree (app.py and components/logic.py, v0.8.5), for the light route's tests.

Why: BioChatter Light is not on PyPI and cannot be cloned here (no GitHub). What llmdeploy's entry point
(render.LIGHT_LAUNCHER) relies on is small: app.py calls components.logic.main_logic(), which runs the module's
`_startup()` when a session starts; upstream's `_startup` sets session_state.correct to True unless OLLAMA_MODEL or
XINFERENCE_MODEL is set, and biochatter's Conversation.query asks the engine once per message, then once more to
correct the answer when `correct` is on. This tree does exactly that, against OPENAI_BASE_URL (the unit's), so a
test can count the engine requests one chat message costs.
"""
from __future__ import annotations

LOGIC = '''
import json
import os
import urllib.request

import streamlit as st

ss = st.session_state


def _startup():
    ss.correct = not os.getenv("XINFERENCE_MODEL") and not os.getenv("OLLAMA_MODEL")


def _ask(messages):
    body = json.dumps({"model": "gpt-3.5-turbo", "messages": messages}).encode()
    request = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", data=body, headers={
        "Content-Type": "application/json", "Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]})
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


def main_logic():
    if not ss.get("mode"):
        _startup()
        ss.mode = "chat"
    if not ss.get("asked"):  # one user message per session
        ss.asked = True
        _ask([{"role": "user", "content": "hello"}])
        if ss.correct:  # the correcting agent's request
            _ask([{"role": "system", "content": "correct the last answer"}, {"role": "user", "content": "hello"}])
    st.write(TEXT)
'''


def app_tree(text: str, launcher_name: str, launcher: str) -> dict[str, str]:
    """The files of the app's folder: upstream's two (stand-ins) and llmdeploy's rendered entry point."""
    return {"app.py": "from components.logic import main_logic\n\nmain_logic()\n",
            "components/__init__.py": "",
            "components/logic.py": f"TEXT = {text!r}\n{LOGIC}",
            launcher_name: launcher}
