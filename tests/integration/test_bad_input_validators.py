"""Bad input whose output the real validators must refuse or accept (systemd-analyze, nginx -t, shellcheck,
cloud-init schema): a unit systemd refuses, a rate nginx cannot hold, a workshop validated once per output.
The pure-Python refusals are in tests/unit/test_bad_input.py."""
import subprocess
from pathlib import Path

import pytest

from llmdeploy.config import StackConfig, parse
from llmdeploy.render import FILES_DIR, HostLayout, render
from llmdeploy.validate import (check_nginx, check_shell, check_systemd_unit, install_throwaway_files,
                                nginx_command, run_endpoints, write_nginx_main_conf)
from support.bad_input import LLAMACPP, problem
from support.project import minimal_raw
from support.workshop_stack import workshop_project

UNIT = f"{FILES_DIR}/llamacpp.service"


@pytest.mark.parametrize("url, filename", [
    ("https://x/My%20Model-Q4_K_M.gguf", "My_Model-Q4_K_M.gguf"),
    ("https://x/it's\"q4.gguf?download=1", "it_s_q4.gguf"),
    ("https://x/a%25b;c.gguf#part", "a_b_c.gguf"),
])
def test_a_model_file_name_becomes_one_systemd_accepts(url: str, filename: str) -> None:
    cfg = parse(minimal_raw(**LLAMACPP, llamacppModelUrl=url))
    assert cfg.model.filename == filename  # type: ignore[union-attr]
    unit = render(cfg).file(UNIT).content
    assert f"/var/lib/llmdeploy/models/{filename} " in unit
    assert check_systemd_unit("llamacpp.service", unit) == (True, "no findings")


def test_systemd_analyze_refuses_the_unit_the_old_file_name_gave() -> None:
    unit = render(parse(minimal_raw(**LLAMACPP, llamacppModelUrl="https://x/My-Model.gguf"))).file(UNIT).content
    for old in ("My%20Model.gguf", "it's.gguf"):
        ok, detail = check_systemd_unit("llamacpp.service", unit.replace("My-Model.gguf", old))
        assert not ok and "llamacpp.service" in detail


def test_validate_runs_systemd_analyze_on_the_engine_unit() -> None:
    cfg = parse(minimal_raw(**LLAMACPP, llamacppModelUrl="https://x/My%20Model-Q4_K_M.gguf"))
    (check,) = [c for c in run_endpoints([("", cfg)])[0].checks if c.name.startswith("systemd-analyze")]
    assert check.name == "systemd-analyze verify llamacpp.service" and check.ok, check.detail


def nginx_t(site: str, cfg: StackConfig, tmp: Path) -> subprocess.CompletedProcess[str]:
    host_layout = HostLayout(root=str(tmp))
    install_throwaway_files(render(cfg, host_layout), host_layout)
    (tmp / "site.conf").write_text(site, encoding="utf-8")
    return subprocess.run([*nginx_command(write_nginx_main_conf(tmp / "site.conf", tmp / "nginx")), "-t"],
                          capture_output=True, text=True, timeout=60)


def test_rates_are_bounded_to_what_nginx_holds(tmp_path: Path) -> None:
    assert "an nginx rate" in problem("rateLimit", rateLimit="99999999999999999999r/s")
    assert "an nginx rate" in problem("rateLimit", rateLimit="1000000r/s")
    cfg = parse(minimal_raw(rateLimit="999999r/s"))
    assert check_nginx(cfg)[0]
    # What the old check let through: real nginx refuses it.
    site = render(cfg, HostLayout(root=str(tmp_path))).nginx_site.replace("999999r/s", "99999999999999999999r/s")
    done = nginx_t(site, cfg, tmp_path)
    assert done.returncode != 0 and "rate" in done.stderr


@pytest.mark.parametrize("attendees", [250, 1000])
def test_a_shared_workshop_of_many_attendees_passes_nginx(tmp_path: Path, attendees: int) -> None:
    rows = [{"id": f"attendee-number-{i:07d}", "name": "A", "email": f"a{i}@example.org"} for i in range(attendees)]
    root = workshop_project(tmp_path, rows, workshopLayout="shared", workshopEndpoints=1, tlsMode="self-signed")
    from llmdeploy.cli import _endpoints
    ((_, cfg),) = _endpoints(root, "ws")
    assert len(cfg.auth.api_keys) == attendees
    ok, detail = check_nginx(cfg)
    assert ok, detail


def test_the_old_rate_comment_line_breaks_nginx_for_250_attendees(tmp_path: Path) -> None:
    cfg = parse(minimal_raw(apiKeys=[f"attendee-number-{i:07d}:30r/m" for i in range(250)]))
    site = render(cfg, HostLayout(root=str(tmp_path))).nginx_site
    names = ", ".join(k.name for k in cfg.auth.api_keys)
    old = site.replace("# Rate 30r/m for the 250 key(s) below.", f"# Rate 30r/m for: {names}.")
    assert old != site
    done = nginx_t(old, cfg, tmp_path)
    assert done.returncode != 0 and "too long parameter" in done.stderr


# ---- validate: what matters, once --------------------------------------------------------------------

def test_a_dollar_or_backtick_inside_a_quoted_value_passes_validate() -> None:
    cfg = parse(minimal_raw(tlsMode="letsencrypt", domain="llm.example.org", acmeEmail="o$x`y@example.org"))
    (acme,) = [f for f in render(cfg).shell_scripts() if f.path.endswith("70-acme.sh")]
    assert "'o$x`y@example.org'" in acme.content
    assert check_shell(acme.path, acme.content) == (True, "no findings")
    # An unquoted expansion (SC2086, info level like SC2016) still fails.
    ok, detail = check_shell("x.sh", acme.content + 'rm -rf $1/tmp\n')
    assert not ok and "SC2086" in detail


def test_a_workshop_validates_each_distinct_output_once(tmp_path: Path) -> None:
    rows = [{"id": i, "name": "A", "email": f"{i}@example.org"} for i in ("u1", "u2", "a-longer-id", "u4")]
    rows[3]["ollamaModel"] = "qwen2.5:7b"
    root = workshop_project(tmp_path, rows, columns=("id", "name", "email", "ollamaModel"), tlsMode="letsencrypt",
                            workshopDomain="ws.example.org")
    from llmdeploy.cli import _endpoints
    reports = {r.name: r for r in run_endpoints(_endpoints(root, "ws"))}
    full = {name for name, r in reports.items() if any(c.name == "nginx -t" for c in r.checks)}
    # The longest hostname of the group gets every check; u4 runs another model, so its output differs.
    assert full == {"a-longer-id", "u4"}
    for name in ("u1", "u2"):
        names = [c.name for c in reports[name].checks]
        assert names == ["same output as checked endpoint", "no secrets in user-data or bundle", "instance metadata size"]
        assert "'a-longer-id'" in reports[name].checks[0].detail
    assert all(c.ok for r in reports.values() for c in r.checks)


def test_a_failure_in_the_checked_endpoint_fails_the_others_of_its_group(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import llmdeploy.validate as validate
    monkeypatch.setattr(validate, "check_nginx", lambda cfg: (False, "nginx: [emerg] broken"))
    cfgs = [(f"u{i}", parse(minimal_raw(domain=f"u{i}.ws.example.org"))) for i in range(3)]
    reports = run_endpoints(cfgs)
    assert all(not all(c.ok for c in r.checks) for r in reports)
