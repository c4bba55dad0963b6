"""`llmdeploy local`: the whole stack in a QEMU VM on this machine (see lifecycle.py)."""
from ..errors import Failure

# JSON {name: key}: API keys chosen by the caller (the Pulumi program's local target) instead of generated ones.
API_KEYS_ENV = "LLMDEPLOY_LOCAL_API_KEYS"
WEBUI_SECRET_KEY_ENV = "LLMDEPLOY_LOCAL_WEBUI_SECRET_KEY"  # Open WebUI's (chatUi open-webui); else generated
RUNTIMES = ("qemu", "nspawn")  # here, not in runtime.py, so that `llmdeploy --help` need not load the runtimes


class LocalError(Failure):
    """`llmdeploy local` could not do what was asked; the message says why and what to do."""
