"""The VM's secret installer run for real on a temp root (bash, install): a provided TLS root only, idempotent,
and delivery that waits briefly for it. The bundle's contents are in tests/unit/test_secret_delivery.py."""
import subprocess
from pathlib import Path

from llmdeploy.config import parse
from llmdeploy.render import INSTALL_SECRETS, HostLayout, render
from llmdeploy.secret_delivery import api_keys_map, generate_api_key, secrets_bundle
from support.project import minimal_raw

CERT = "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIGHkey\n-----END PRIVATE KEY-----\n"


def test_install_script_installs_provided_tls_root_only_and_is_idempotent(tmp_path: Path) -> None:
    cfg = parse(minimal_raw(tlsMode="provided", tlsCertificate=CERT, tlsPrivateKey=KEY))
    host_layout = HostLayout(root=str(tmp_path / "root"))
    script = tmp_path / "install-secrets"
    script.write_text(render(cfg, host_layout).file(INSTALL_SECRETS).content)
    script.chmod(0o755)
    bundle = secrets_bundle(cfg, {"default": generate_api_key()})
    first = subprocess.run([str(script)], input=bundle, capture_output=True, check=True)
    tls = Path(host_layout.paths.tls_dir)
    assert (tls / "fullchain.pem").read_text() == CERT and (tls / "privkey.pem").read_text() == KEY
    assert (tls / "privkey.pem").resolve().stat().st_mode & 0o777 == 0o600
    assert Path(host_layout.paths.api_keys_map).stat().st_mode & 0o777 == 0o600
    assert b"installed" in first.stdout and b"sk-llm-" not in first.stdout + first.stderr
    second = subprocess.run([str(script)], input=bundle, capture_output=True, check=True)
    assert b"installed" not in second.stdout  # nothing changed, nothing reloaded
