"""Where llmdeploy keeps its state, markers, logs and scripts on the VM: the one definition that the templates
(render.py passes `vm`, see template_vars) and the Python code reading the VM over SSH (readiness gates,
progress, smoke checks, `llmdeploy local logs`) share."""
from __future__ import annotations

STATE_DIR = "/var/lib/llmdeploy"
STAGES_DIR = f"{STATE_DIR}/stages"  # <step>.done (a timestamp) or <step>.failed (the exit code) per step
READY_MARKER = f"{STATE_DIR}/ready"  # written by the last step, 90-ready
# "<epoch deadline> <pid>" of the llmdeploy-wait-ready now waiting (pulumi up's gate, `local up`), removed when it
# ends: the one clock a step that must finish before the gate gives up reads (the Xinference launch).
GATE_DEADLINE = f"{STATE_DIR}/gate-deadline"
LOG_DIR = "/var/log/llmdeploy"  # <step>.log per step
ETC_DIR = "/etc/llmdeploy"
SECRETS_DIR = f"{ETC_DIR}/secrets"  # what llmdeploy-install-secrets delivers after boot (hf.env, the key map)
VM_FACTS_FILE = f"{ETC_DIR}/stack.json"
TLS_DIR = f"{ETC_DIR}/tls"  # fullchain.pem and privkey.pem, whichever tlsMode made them
LIBEXEC = "/usr/local/lib/llmdeploy"
STEPS_DIR = f"{LIBEXEC}/steps"
FIREWALL = f"{LIBEXEC}/firewall.sh"
OPEN_WEBUI_ADMIN = f"{LIBEXEC}/open-webui-admin"  # chatUi open-webui: signs the admin key's user in first
LIB_SH = f"{LIBEXEC}/lib.sh"  # the helpers every step sources
FILES_DIR = "/usr/local/share/llmdeploy/files"
# A step's own records of what it installed, so that a re-run changes nothing.
APT_LISTS_STAMP = f"{STATE_DIR}/apt-lists-updated"  # apt_install refreshes the package lists once per run
OLLAMA_SOURCE = f"{STATE_DIR}/ollama-source"  # the Ollama archive URL installed (kept outside lib/ollama)
MODELS_DIR = f"{STATE_DIR}/models"  # llama.cpp's GGUF files
HF_CACHE = f"{STATE_DIR}/hf"  # the vLLM container's Hugging Face cache
# The engines' and chat frontends' virtualenvs (venv_install in lib.sh writes its stamp inside each).
OPT_DIR = "/opt/llmdeploy"
LLAMACPP_VENV = f"{OPT_DIR}/llamacpp"
VLLM_CPU_VENV = f"{OPT_DIR}/vllm"
XINFERENCE_VENV = f"{OPT_DIR}/xinference"  # xinferenceInstall venv; conda uses MINIFORGE_DIR/envs/<condaEnv>
RAY_VENV = f"{OPT_DIR}/ray"
OPEN_WEBUI_VENV = f"{OPT_DIR}/open-webui"
BIOCHATTER_LIGHT_APP = f"{OPT_DIR}/biochatter-light"  # the checked-out repository
BIOCHATTER_LIGHT_VENV = f"{OPT_DIR}/biochatter-light-venv"
BIOCHATTER_LIGHT_HOME = f"{STATE_DIR}/biochatter-light"  # its service's HOME, the one place it writes
BIOCHATTER_NEXT_LOGS = f"{STATE_DIR}/biochatter-next-logs"  # biochatter-server's /app/logs (it writes app.log there)
MINIFORGE_DIR = "/opt/miniforge3"  # 20-conda's Miniforge
# nginx's web roots; templates read them (and TLS, secrets) from template_context.HostLayout.paths, which tests
# move under a root.
ACME_WEBROOT = "/var/www/llmdeploy-acme"
CHAT_ROOT = "/var/www/llmdeploy-chat"
# nginx's usage log: one JSON line per request, with the key's name and never the key (llmdeploy usage reads it).
# Under /var/log/nginx, the nginx package's logrotate rule (/var/log/nginx/*.log, daily, 14 kept) rotates it.
USAGE_LOG = "/var/log/nginx/llmdeploy-usage.log"
# Autostop (idleStopMinutes, ttlHours): its agent, its config, its state (under /run: a VM started again starts its
# idle clock afresh; `llmdeploy status` reads it) and when its TTL began (kept across reboots).
AUTOSTOP_AGENT = f"{LIBEXEC}/autostop-agent.py"
AUTOSTOP_CONFIG = f"{ETC_DIR}/autostop.json"
AUTOSTOP_STATE = "/run/llmdeploy/autostop.json"
AUTOSTOP_TTL = f"{STATE_DIR}/autostop-ttl.json"
PROVISION = "/usr/local/sbin/llmdeploy-provision"
INSTALL_SECRETS = "/usr/local/sbin/llmdeploy-install-secrets"
WAIT_READY = "/usr/local/sbin/llmdeploy-wait-ready"  # the one definition of "ready" (templates/wait-ready.sh.j2)
# The metadata carries only the bootstrap and the bundle's digest; the bundle (every other file above) comes over
# SSH, is kept under BUNDLE_DIR as <sha256>.tar.gz, and is unpacked only when its digest matches BUNDLE_DIGEST.
BOOTSTRAP = "/var/lib/cloud/scripts/per-boot/llmdeploy-bootstrap"  # cloud-init runs it at every boot
RECEIVE_BUNDLE = "/usr/local/sbin/llmdeploy-receive-bundle"
BUNDLE_DIGEST = f"{ETC_DIR}/bundle.sha256"
BUNDLE_DIR = f"{STATE_DIR}/bundle"
BUNDLE_STAGE = "00-bundle"  # its stage marker: 00-bundle.done, or 00-bundle.failed naming the mismatch
# cloud-init's own: boot-finished is written when its final stage ends.
BOOT_FINISHED = "/var/lib/cloud/instance/boot-finished"
CLOUD_INIT_OUTPUT = "/var/log/cloud-init-output.log"


def step_log(step: str) -> str:
    return f"{LOG_DIR}/{step}.log"


def template_vars() -> dict[str, str]:
    """Every path above by its lower-case name, as the templates read them: {{ vm.log_dir }}."""
    return {name.lower(): value for name, value in globals().items() if name.isupper() and isinstance(value, str)}
