"""The validators behind `llmdeploy validate`, run with the real tools: they pass the rendered output
and they catch what each is there to catch."""
import subprocess
from pathlib import Path

import pytest

from llmdeploy.config import parse
from llmdeploy.render import HostLayout, render
from llmdeploy.stack_yaml import load_stack_config
from llmdeploy.validate import check_cloud_init_schema, check_nginx, check_shell, check_top_level_keys, install_throwaway_files, nginx_command, run_all, write_nginx_main_conf
from support.next_config import CLIENT as NEXT_CLIENT, SERVER as NEXT_SERVER
from support.project import EXAMPLE_STACKS, ROOT, minimal_raw


@pytest.mark.parametrize("stack", EXAMPLE_STACKS)
def test_every_example_stack_passes_every_check(stack: str) -> None:
    checks = run_all(load_stack_config(ROOT, stack))
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    assert not failed
    names = {c.name for c in checks}
    assert {"cloud-init schema", "cloud-init top-level keys", "nginx -t", "no secrets in user-data or bundle"} <= names
    assert sum(n.startswith("shellcheck ") for n in names) >= 7


# Frontends without an example stack: chatUi biochatter-next needs image digests its user pins (support/next_config).
FRONTEND_CONFIGS = {"biochatter-next": dict(chatUi="biochatter-next", domain="llm.example.org",
                                            apiKeys=["instructor:admin", "student1"],
                                            biochatterNextServerImage=NEXT_SERVER, biochatterNextClientImage=NEXT_CLIENT,
                                            engine="llamacpp", shape="VM.Standard.E4.Flex",
                                            llamacppModelUrl="https://models.invalid/m.gguf")}


@pytest.mark.parametrize("ui", sorted(FRONTEND_CONFIGS))
def test_every_chat_frontend_passes_every_check(ui: str) -> None:
    checks = run_all(parse(minimal_raw(**FRONTEND_CONFIGS[ui])))
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    assert not failed
    names = {c.name for c in checks}
    assert {"nginx -t", "shellcheck 45-chat.sh", "shellcheck 30-docker.sh", "cloud-init schema"} <= names
    assert {f"systemd-analyze verify {ui}-server.service", f"systemd-analyze verify {ui}-client.service"} <= names


def test_basic_auth_and_provided_tls_pass_nginx() -> None:
    cfg = parse(minimal_raw(tlsMode="provided", basicAuthUsers=["alice"],
                            basicAuthPasswords='{"alice": "alice-secret-passphrase"}',
                            tlsCertificate="-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----",
                            tlsPrivateKey="-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----"))
    ok, detail = check_nginx(cfg)
    assert ok, detail


def test_schema_alone_lets_a_misspelt_key_through_but_the_strict_check_does_not() -> None:
    user_data = "#cloud-config\npakages: [nginx]\nruncmd: [[echo, hi]]\n"
    assert check_cloud_init_schema(user_data)[0]  # the reason the strict check exists
    ok, detail = check_top_level_keys(user_data)
    assert not ok and "pakages" in detail


def test_schema_catches_a_wrong_type() -> None:
    ok, detail = check_cloud_init_schema("#cloud-config\nssh_pwauth: [1, 2]\n")
    assert not ok and "ssh_pwauth" in detail


def test_shellcheck_catches_an_unquoted_variable() -> None:
    ok, detail = check_shell("x.sh", '#!/bin/bash\nset -euo pipefail\nrm -rf $1/tmp\n')
    assert not ok and "SC2086" in detail
    assert check_shell("y.sh", '#!/bin/bash\nset -euo pipefail\nrm -rf "$1/tmp"\n')[0]


def test_nginx_t_catches_a_broken_site(tmp_path: Path) -> None:
    cfg = parse(minimal_raw())
    host_layout = HostLayout(root=str(tmp_path))
    rendered = render(cfg, host_layout)
    install_throwaway_files(rendered, host_layout)
    site = tmp_path / "site.conf"
    site.write_text(rendered.nginx_site.replace("proxy_buffering off;", "proxy_buffering of;"))
    conf = write_nginx_main_conf(site, tmp_path / "nginx")
    result = subprocess.run([*nginx_command(conf), "-t"], capture_output=True, text=True)
    assert result.returncode != 0 and "proxy_buffering" in result.stderr


def test_autostop_step_and_unit_pass_shellcheck_and_systemd_analyze() -> None:
    checks = run_all(parse(minimal_raw(idleStopMinutes=30, ttlHours=8)))
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    assert not failed
    names = {c.name for c in checks}
    assert {"shellcheck 35-autostop.sh", "systemd-analyze verify llmdeploy-autostop.service"} <= names
