"""The chat frontends for people (chatUi), one class each, beside the engines: their config checks, their install
step (steps/45-chat-<ui>.sh.j2), their unit and support files, their loopback port and their page's path. The core
asks the frontend object; it never compares a frontend's name."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from .conf.reader import Problem, Reader, set_cmd
from .shapes import required_memory_gb
from .templating import VmFile, render_template
from .vmpaths import FILES_DIR, OPEN_WEBUI_ADMIN

if TYPE_CHECKING:
    from .config import Auth, StackConfig
    from .engines import Engine

NONE = "none"
# BioChatter Light's OpenAI path lists only OpenAI's model names and takes no model of its own: the engine must
# serve its model under one of them (its Ollama path takes OLLAMA_MODEL instead).
BIOCHATTER_LIGHT_MODEL = "gpt-3.5-turbo"
# BioChatter Light's entry point, beside upstream's app.py: the app with its correcting agent off (one engine request
# per message; files/biochatter-light-launch.py.j2 says why).
LIGHT_LAUNCHER = "llmdeploy_light.py"
OPEN_WEBUI_MEMORY_MB = 2048  # its unit's MemoryMax: about 900 MB PSS idle (measured), room for a workshop's chats


class ChatFrontend:
    ui: ClassVar[str] = ""  # the chatUi value
    port: ClassVar[int] = 0  # where it listens on loopback (not 8080, llama.cpp's)
    path: ClassVar[str] = "/"  # where its page is on the chat host
    location: ClassVar[str] = "/"  # the prefix nginx passes on to it; the rest of the chat host is 404
    needs_admin_key: ClassVar[bool] = False  # the first key to sign in becomes its admin
    pip_torch: ClassVar[bool] = False  # pip installs torch with it (the CPU wheel, on CPU machines)
    containers: ClassVar[bool] = False  # it runs in Docker containers (step 30-docker installs Docker)

    @property
    def step_template(self) -> str:
        return f"steps/45-chat-{self.ui}.sh.j2"

    def check(self, r: Reader, engine: Engine, model_name: str, os_name: str, auth: Auth) -> None:
        """What it refuses of the engine, the model's name, the OS and the keys."""

    def check_config(self, r: Reader, cfg: StackConfig) -> None:
        """What it refuses of the whole config (memory beside the engine)."""

    def files(self, cfg: StackConfig, ctx: dict[str, Any]) -> list[VmFile]:
        return []


class OpenWebUI(ChatFrontend):
    ui = "open-webui"
    port = 8088
    path = "/"  # it has no subpath support
    needs_admin_key = True
    pip_torch = True

    def check(self, r: Reader, engine: Engine, model_name: str, os_name: str, auth: Auth) -> None:
        admin = next((k.name for k in auth.api_keys if k.admin), "")
        if auth.api_keys and not admin and not r.failed("apiKeys"):
            r.problems.append(Problem(
                "apiKeys", [k.name for k in auth.api_keys], "an admin key (NAME:admin) for chatUi open-webui: Open "
                "WebUI makes the first user to sign in its admin, and llmdeploy signs the first admin key in before "
                "any attendee can", set_cmd("apiKeys", f"--path 'apiKeys[{len(auth.api_keys)}]' instructor:admin")))

    def check_config(self, r: Reader, cfg: StackConfig) -> None:
        """RAM for it next to the engine's weights on a CPU machine (its admin key: check)."""
        weights = 0.0 if cfg.gpu or not cfg.params_billions else required_memory_gb(cfg.params_billions,
                                                                                     cfg.quant_bits)
        need_gb = weights + OPEN_WEBUI_MEMORY_MB / 1024
        if cfg.memory_gb >= need_gb:
            return
        local = cfg.deployment.local_vm
        key, fix = (("localMemoryMb", set_cmd("localMemoryMb", str(math.ceil(need_gb) * 1024))) if local
                    else ("shapeMemoryGbs", set_cmd("shapeMemoryGbs", str(math.ceil(need_gb)))))
        have = cfg.local_vm.memory_mb if local else cfg.shape_memory_gbs
        r.problems.append(Problem(key, have, f"at least {need_gb:.1f} GB of RAM for chatUi open-webui ({weights:.1f} "
                                  f"GB for the model's weights and {OPEN_WEBUI_MEMORY_MB} MB for Open WebUI)", fix))

    def files(self, cfg: StackConfig, ctx: dict[str, Any]) -> list[VmFile]:
        return [VmFile(f"{FILES_DIR}/open-webui.service", render_template("files/open-webui.service.j2", ctx)),
                VmFile(OPEN_WEBUI_ADMIN, render_template("files/open-webui-admin.sh.j2", ctx), "0755")]


# BioChatter Light's pyproject.toml asks for Python >=3.10,<3.12; its pins (biochatter 0.8.2) build on no newer one.
_BIOCHATTER_LIGHT_OSES = ("ubuntu-22.04", "debian-12")


class BiochatterLight(ChatFrontend):
    ui = "biochatter-light"
    port = 8501  # Streamlit's own
    path = "/light/"  # Streamlit's baseUrlPath
    location = "/light/"

    def check(self, r: Reader, engine: Engine, model_name: str, os_name: str, auth: Auth) -> None:
        if os_name not in _BIOCHATTER_LIGHT_OSES and not r.failed("os"):
            r.bad("os", os_name, f"one of {', '.join(_BIOCHATTER_LIGHT_OSES)} for chatUi biochatter-light (it needs "
                  "Python 3.10 or 3.11; Ubuntu 24.04 has 3.12)", "ubuntu-22.04")
        if not engine.biochatter_light_native and model_name != BIOCHATTER_LIGHT_MODEL and not r.failed("modelName"):
            r.bad("modelName", model_name, f"{BIOCHATTER_LIGHT_MODEL} for chatUi biochatter-light on {engine.name} "
                  "(BioChatter Light's OpenAI path offers only OpenAI's model names; the engine serves the model under "
                  "this name)", BIOCHATTER_LIGHT_MODEL)

    def files(self, cfg: StackConfig, ctx: dict[str, Any]) -> list[VmFile]:
        return [VmFile(f"{FILES_DIR}/biochatter-light.service", render_template("files/biochatter-light.service.j2", ctx)),
                VmFile(f"{FILES_DIR}/{LIGHT_LAUNCHER}", render_template("files/biochatter-light-launch.py.j2", ctx))]


class BiochatterNext(ChatFrontend):
    """Upstream's two containers (biochatter-next's docker-compose.yml): the Next.js client, which the browser
    talks to, and biochatter-server (FastAPI), which the client calls and which calls the engine. Both run on the
    host's network, bound to loopback: the server must reach the engine on 127.0.0.1."""
    ui = "biochatter-next"
    port = 3000  # the Next.js client (its Dockerfile's EXPOSE; Next's standalone server.js reads PORT, HOSTNAME)
    path = "/biochatter-next"  # its next.config.mjs basePath; Next answers 308 to the same path with a "/" added
    # All of the chat host: its pages fetch root paths outside the basePath (ApiPath.OpenAI, "/api/openai/...").
    location = "/"
    containers = True
    server_port: ClassVar[int] = 5001  # biochatter-server's (its Dockerfile's gunicorn --bind)

    def check(self, r: Reader, engine: Engine, model_name: str, os_name: str, auth: Auth) -> None:
        if auth.api_keys and not next_server_key(auth) and not r.failed("apiKeys"):
            r.problems.append(Problem(
                "apiKeys", [k.name for k in auth.api_keys], "a key without :admin for chatUi biochatter-next: its "
                "server talks to the engine with the first ordinary key, never an admin key",
                set_cmd("apiKeys", f"--path 'apiKeys[{len(auth.api_keys)}]' biochatter")))

    def files(self, cfg: StackConfig, ctx: dict[str, Any]) -> list[VmFile]:
        return [VmFile(f"{FILES_DIR}/{unit}.service", render_template(f"files/{unit}.service.j2", ctx))
                for unit in (NEXT_SERVER_UNIT, NEXT_CLIENT_UNIT)]


NEXT_SERVER_UNIT = "biochatter-next-server"
NEXT_KEY_ENV = "biochatter-next.env"  # in the secrets folder: OPENAI_API_KEY=<the first ordinary key>
NEXT_CLIENT_UNIT = "biochatter-next-client"


def next_server_key(auth: Auth) -> str:
    """The key biochatter-server talks to the engine with: the first one without :admin ("" if none)."""
    return next((k.name for k in auth.api_keys if not k.admin), "")


FRONTENDS: dict[str, ChatFrontend] = {f.ui: f for f in (OpenWebUI(), BiochatterLight(), BiochatterNext())}
CHAT_UIS = (NONE, *FRONTENDS)  # the values of chatUi
CHAT_UI_PORTS = {ui: f.port for ui, f in FRONTENDS.items()}


def frontend(ui: str) -> ChatFrontend | None:
    """The frontend chatUi names; None for none."""
    return FRONTENDS.get(ui)


def runs_containers(ui: str) -> bool:
    """Whether chatUi's frontend needs Docker on the machine."""
    chosen = FRONTENDS.get(ui)
    return chosen is not None and chosen.containers
