"""A stand-in for Xinference 4.1's model management API, answering as the real code does (read from the
xinference-4.1.0 wheel: api/routers/models.py, api/restful_api.py, core/supervisor.py, core/worker.py,
core/autostart.py, core/launch_history_store.py). Errors are FastAPI's {"detail": ...}, and JSON is written
compactly as Starlette's JSONResponse writes it.

Why: Xinference itself is 6 GB with CUDA torch and cannot launch a model here, but llmdeploy's model
script (register, launch, autostart) and nginx's /healthz must be proven against its behaviour:

- GET /status -> 200 whether or not any model runs;
- GET /v1/models -> {"object": "list", "data": [...]}, the launched models (id = model uid);
- GET /v1/models/{uid} -> 200 with the model's description once launched; 503 "Model is loading" while it
  launches; 400 "Model not found in the model list, uid: ..." when it does not run (describe_model);
- POST /v1/models {model_uid, model_name, model_engine, ...} -> blocks until the model is ready, then
  {"model_uid": uid}; 400 for a missing model_name or model_engine, a name neither built-in nor registered,
  or a uid already in the model list (launching or running);
- GET /v1/model_registrations/LLM -> [{"model_name", "is_builtin"}] of built-in and custom models, sorted by
  name, one entry per name; GET /v1/model_registrations/LLM/{name} -> the family, or 400 "Model ... not found";
- POST /v1/model_registrations/LLM {"model": "<json>", "persist": bool} -> null; 400 "Model ... already
  registered" when the name is taken, by a built-in model too;
- GET /v1/autostart/models -> {"models": [{enabled, priority, max_retries, retry_interval_seconds, launch,
  state}]}; POST /v1/autostart/models upserts the entry by launch.model_uid (one per uid) and, as the real
  supervisor does, launches it at once unless it already runs or launches.

`restart()` is `systemctl restart xinference`: launched models are gone, registrations (persist) and autostart
entries (its SQLite store) stay, and after `autostart_delay` seconds each autostart entry is launched again.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from .stubserver import StubHandler, StubState, serve

BUILTIN_LLMS = ("llama-3.1-instruct", "qwen2.5-instruct", "qwen3")


@dataclass
class XinferenceStub(StubState):
    builtin: tuple[str, ...] = BUILTIN_LLMS
    launch_seconds: float = 0.3  # how long a launch takes (the download and load)
    autostart_delay: float = 0.5  # after a restart, until the supervisor runs the autostart entries
    registrations: dict[str, dict[str, Any]] = field(default_factory=dict)
    running: dict[str, dict[str, Any]] = field(default_factory=dict)
    launching: set[str] = field(default_factory=set)
    autostart: dict[str, dict[str, Any]] = field(default_factory=dict)
    launches: list[tuple[str, str]] = field(default_factory=list)  # (uid, "api" or "autostart")
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def known(self, name: str) -> bool:
        return name in self.builtin or name in self.registrations

    def posts(self, path: str) -> int:
        return sum(1 for r in self.requests if r.method == "POST" and r.path.split("?")[0] == path)

    def launch(self, launch: dict[str, Any], source: str) -> tuple[int, Any]:
        """Launch and wait until ready, as supervisor.launch_builtin_model with wait_ready."""
        name, uid = launch.get("model_name"), launch.get("model_uid") or launch.get("model_name")
        with self.lock:
            if not name or not self.known(name):
                return 400, {"detail": f"Model not found, name: {name}"}
            if uid in self.launching or uid in self.running:
                return 400, {"detail": f"Model is already in the model list, uid: {uid}"}
            self.launching.add(uid)
            self.launches.append((uid, source))
        self.stop.wait(self.launch_seconds)
        with self.lock:
            if uid not in self.launching:  # a restart came first: the launch died with the process
                return 500, {"detail": "Remote server closed"}
            self.launching.discard(uid)
            self.running[uid] = {"model_name": name, "model_type": launch.get("model_type", "LLM"),
                                 "model_engine": launch.get("model_engine"), "address": "127.0.0.1:40000",
                                 "accelerators": ["0"], "model_format": launch.get("model_format"),
                                 "model_size_in_billions": launch.get("model_size_in_billions"),
                                 "quantization": launch.get("quantization"), "replica": 1}
        return 200, {"model_uid": uid}

    def schedule_autostart(self, delay: float) -> None:
        """The supervisor's _run_autostart_with_retries: launch every enabled entry that does not run."""
        def run() -> None:
            if self.stop.wait(delay):
                return
            with self.lock:
                entries = [e for e in self.autostart.values() if e["enabled"]]
            for entry in entries:
                uid = entry["launch"]["model_uid"]
                if uid not in self.running and uid not in self.launching:
                    self.launch(entry["launch"], "autostart")
        thread = threading.Thread(target=run, daemon=True)
        self.threads.append(thread)
        thread.start()

    def restart(self) -> None:
        with self.lock:
            self.running.clear()
            self.launching.clear()
        self.schedule_autostart(self.autostart_delay)


def _normalize_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """core/autostart.py normalize_autostart_model_entry: a launch object (or the flat form), defaults filled."""
    launch = entry.get("launch")
    if launch is None and "model_name" in entry:
        launch = {k: v for k, v in entry.items()
                  if k not in ("enabled", "priority", "max_retries", "retry_interval_seconds", "state")}
    if not isinstance(launch, dict):
        raise ValueError("Autostart model entry requires a launch object.")
    launch = {k: v for k, v in launch.items() if v is not None and k != "wait_ready"}
    if not isinstance(launch.get("model_name"), str) or not launch["model_name"].strip():
        raise ValueError("Autostart launch config requires a non-empty model_name.")
    launch["model_uid"] = (launch.get("model_uid") or launch["model_name"]).strip()
    launch.setdefault("model_type", "LLM")
    return {"enabled": bool(entry.get("enabled", True)), "priority": int(entry.get("priority", 100)),
            "max_retries": int(entry.get("max_retries", 3)),
            "retry_interval_seconds": int(entry.get("retry_interval_seconds", 30)), "launch": launch}


class _Handler(StubHandler[XinferenceStub]):
    def send_json(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        """Starlette's JSONResponse: compact separators, no spaces (what a grep of the text would see)."""
        self.send_body(status, json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(), content_type)

    def _route(self) -> tuple[str, list[str]]:
        path = urlsplit(self.path).path
        return path, [unquote(p) for p in path.strip("/").split("/")]

    def do_GET(self) -> None:
        self.arrive()
        path, parts = self._route()
        st = self.state
        if path == "/status":
            self.send_json(200, {})
        elif path == "/v1/models":
            with st.lock:
                data = [{"id": uid, "object": "model", "created": 0, "owned_by": "xinference", **info}
                        for uid, info in st.running.items()]
            self.send_json(200, {"object": "list", "data": data})
        elif len(parts) == 3 and parts[:2] == ["v1", "models"]:
            self._describe(parts[2])
        elif path == "/v1/model_registrations/LLM":
            with st.lock:
                entries = [{"model_name": n, "is_builtin": True} for n in st.builtin]
                entries += [{"model_name": n, "is_builtin": False} for n in st.registrations if n not in st.builtin]
            self.send_json(200, sorted(entries, key=lambda e: e["model_name"].lower()))
        elif len(parts) == 4 and parts[:3] == ["v1", "model_registrations", "LLM"]:
            name = parts[3]
            if name in st.builtin:
                self.send_json(200, {"model_name": name, "version": 2, "model_specs": []})
            elif name in st.registrations:
                self.send_json(200, st.registrations[name])
            else:
                self.send_json(400, {"detail": f"Model {name} not found"})
        elif path == "/v1/autostart/models":
            with st.lock:
                models = [{**e, "state": {"status": "active" if uid in st.running else "launching"
                                          if uid in st.launching else "error"}}
                          for uid, e in st.autostart.items()]
            self.send_json(200, {"models": models})
        else:
            self.send_json(404, {"detail": "Not Found"})

    def _describe(self, uid: str) -> None:
        with self.state.lock:
            if uid in self.state.running:
                self.send_json(200, dict(self.state.running[uid]))
            elif uid in self.state.launching:
                self.send_json(503, {"detail": f"Model is loading, please retry later: Model {uid} is launching, "
                                               "not yet ready for inference"})
            else:
                self.send_json(400, {"detail": f"Model not found in the model list, uid: {uid}"})

    def do_POST(self) -> None:
        body = self.json_body(self.arrive())
        path, _ = self._route()
        if body is None:
            self.send_json(400, {"detail": "There was an error parsing the body"})
        elif path == "/v1/models":
            self._launch(body)
        elif path == "/v1/model_registrations/LLM":
            self._register(body)
        elif path == "/v1/autostart/models":
            self._upsert_autostart(body)
        else:
            self.send_json(404, {"detail": "Not Found"})

    def _launch(self, body: dict[str, Any]) -> None:
        if not body.get("model_name"):
            self.send_json(400, {"detail": "Invalid input. Please specify the `model_name` field."})
        elif not body.get("model_engine") and body.get("model_type", "LLM") == "LLM":
            self.send_json(400, {"detail": "Invalid input. Please specify the `model_engine` field."})
        else:
            self.send_json(*self.state.launch(body, "api"))

    def _register(self, body: dict[str, Any]) -> None:
        try:
            family = json.loads(body["model"])
            name = family["model_name"]
        except (KeyError, TypeError, ValueError):
            self.send_json(422, {"detail": [{"loc": ["body", "model"], "msg": "field required"}]})
            return
        with self.state.lock:
            if self.state.known(name):
                self.send_json(400, {"detail": f"Model {name} already registered"})
                return
            self.state.registrations[name] = family
        self.send_json(200, None)

    def _upsert_autostart(self, body: dict[str, Any]) -> None:
        try:
            entry = _normalize_entry(body)
        except ValueError as err:
            self.send_json(400, {"detail": str(err)})
            return
        with self.state.lock:
            self.state.autostart[entry["launch"]["model_uid"]] = entry
        self.state.schedule_autostart(0.0)
        with self.state.lock:
            models = [{**e, "state": {}} for e in self.state.autostart.values()]
        self.send_json(200, {"models": models})


@contextmanager
def xinference_stub(**settings: Any) -> Iterator[XinferenceStub]:
    """Serve the stand-in on a free loopback port until the with-block ends (settings: see XinferenceStub)."""
    with serve(_Handler, XinferenceStub(**settings)) as state:
        try:
            yield state
        finally:
            state.stop.set()
            for thread in state.threads:
                thread.join(timeout=10)


def wait_for(check: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False
