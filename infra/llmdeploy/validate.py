"""The checks `llmdeploy validate` runs on rendered output, each with the real tool where one exists.

Every check returns a Check (name, ok, detail, seconds) instead of raising, so all of them run and
the report shows each one. Tools: Debian's cloud-init (schema), shellcheck, nginx (nginx -t).
"""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import tempfile
import time
from base64 import b64decode
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from .config import StackConfig
from .render import FILES_DIR, Layout, Rendered, encode_user_data, render

# OCI refuses instance metadata over 32,000 bytes; user_data is most of it.
OCI_METADATA_LIMIT = 32_000
# Debian's cloud-init lives in the system Python, whatever Python runs llmdeploy.
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0

    def line(self) -> str:
        first = self.detail.strip().splitlines()[0] if self.detail.strip() else ""
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name:<34} {self.seconds:6.2f}s  {first}"


def _timed(name: str, fn: Callable[[], tuple[bool, str]]) -> Check:
    start = time.monotonic()
    try:
        ok, detail = fn()
    except FileNotFoundError as exc:
        ok, detail = False, f"{exc.filename} is not installed (apt-get install cloud-init nginx shellcheck)"
    return Check(name, ok, detail, time.monotonic() - start)


def _missing_tool(tool: str, package: str) -> tuple[bool, str] | None:
    if shutil.which(tool) is None:
        return False, f"{tool} not found: install it (apt-get install {package})"
    return None


# ---- cloud-init -------------------------------------------------------------------------------

def cloud_init_top_level_keys() -> set[str]:
    """Every top-level key cloud-init's schema knows (the schema itself lets unknown keys through)."""
    code = ("import json\nfrom cloudinit.config.schema import get_schema\ns = get_schema()\nkeys = set()\n"
            "for part in s.get('allOf', []):\n"
            "    ref = part.get('$ref', '')\n"
            "    keys |= set(s['$defs'].get(ref.rsplit('/', 1)[-1], {}).get('properties', {}))\n"
            "print(json.dumps(sorted(keys)))\n")
    out = subprocess.run([SYSTEM_PYTHON, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return set(json.loads(out.stdout))


def check_cloud_init_schema(user_data: str) -> tuple[bool, str]:
    missing = _missing_tool("cloud-init", "cloud-init")
    if missing:
        return missing
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        fh.write(user_data)
    try:
        result = subprocess.run(["cloud-init", "schema", "--config-file", fh.name], capture_output=True,
                                text=True, timeout=120)
    finally:
        Path(fh.name).unlink()
    output = (result.stdout + result.stderr).strip()
    return result.returncode == 0, output.replace(fh.name, "user-data")


def check_top_level_keys(user_data: str) -> tuple[bool, str]:
    doc = yaml.safe_load(user_data)
    if not isinstance(doc, dict):
        return False, "user-data is not a YAML mapping"
    unknown = sorted(set(doc) - cloud_init_top_level_keys())
    if unknown:
        return False, f"keys cloud-init does not know (it would ignore them silently): {', '.join(unknown)}"
    return True, f"{len(doc)} top-level keys, all known to cloud-init: {', '.join(doc)}"


# ---- shellcheck -------------------------------------------------------------------------------

def check_shell(path: str, content: str) -> tuple[bool, str]:
    missing = _missing_tool("shellcheck", "shellcheck")
    if missing:
        return missing
    result = subprocess.run(["shellcheck", "--shell=bash", "--format=json1", "-"], input=content,
                            capture_output=True, text=True, timeout=120)
    comments = json.loads(result.stdout or "{}").get("comments", [])
    if not comments:
        return True, "no findings"
    found = [f"line {c['line']}: SC{c['code']} {c['level']}: {c['message']}" for c in comments]
    return False, f"{len(found)} finding(s): " + " | ".join(found)


# ---- nginx ------------------------------------------------------------------------------------

NGINX_TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_main_conf(site_path: Path, workdir: Path, root_user: bool) -> str:
    """A minimal main config that includes the site and keeps nginx's pid, logs and temp files in workdir."""
    temp_paths = "".join(f"    {kind}_temp_path {workdir}/tmp/{kind};\n" for kind in NGINX_TEMP_KINDS)
    return ("user root;\n" if root_user else "") + (
        "worker_processes 1;\n"
        f"pid {workdir}/nginx.pid;\n"
        f"error_log {workdir}/error.log info;\n"
        "events {\n    worker_connections 256;\n}\n"
        "http {\n"
        "    include /etc/nginx/mime.types;\n"
        f"    access_log {workdir}/access.log;\n"
        f"{temp_paths}"
        f"    include {site_path};\n"
        "}\n")


def write_nginx_main_conf(site_path: Path, workdir: Path, root_user: bool = False) -> Path:
    workdir = workdir.resolve()
    for kind in NGINX_TEMP_KINDS:
        (workdir / "tmp" / kind).mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_main_conf(site_path.resolve(), workdir, root_user), encoding="utf-8")
    return conf


def nginx_command(conf: Path) -> list[str]:
    # -e: the log to use before the config is read (nginx's default is under /var/log/nginx).
    return ["nginx", "-c", str(conf), "-p", str(conf.parent), "-e", str(conf.parent / "error.log")]


def install_throwaway_files(rendered: Rendered, layout: Layout) -> None:
    """Everything the site refers to, under layout.root: a throwaway certificate, htpasswd, empty key map."""
    paths = layout.paths
    tls = Path(paths["tls_dir"])
    tls.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=llmdeploy-validate",
                    "-keyout", str(tls / "privkey.pem"), "-out", str(tls / "fullchain.pem")],
                   check=True, capture_output=True, timeout=60)
    Path(paths["secrets_dir"]).mkdir(parents=True, exist_ok=True)
    Path(paths["api_keys_map"]).touch()
    Path(paths["htpasswd"]).write_text(rendered.file(f"{FILES_DIR}/htpasswd").content, encoding="utf-8")
    Path(paths["acme_webroot"]).mkdir(parents=True, exist_ok=True)


def check_nginx(cfg: StackConfig) -> tuple[bool, str]:
    """nginx -t on the site as rendered for the VM, with its file paths moved under a temporary root."""
    missing = _missing_tool("nginx", "nginx")
    if missing:
        return missing
    with tempfile.TemporaryDirectory(prefix="llmdeploy-nginx-") as tmp:
        layout = Layout(root=tmp)
        rendered = render(cfg, layout)
        install_throwaway_files(rendered, layout)
        site = Path(tmp) / "site.conf"
        site.write_text(rendered.nginx_site, encoding="utf-8")
        conf = write_nginx_main_conf(site, Path(tmp) / "nginx")
        result = subprocess.run([*nginx_command(conf), "-t"], capture_output=True, text=True, timeout=60)
        return result.returncode == 0, (result.stderr + result.stdout).replace(tmp, "<tmp>").strip()


# ---- secrets and size -------------------------------------------------------------------------

def check_no_secrets(cfg: StackConfig, rendered: Rendered) -> tuple[bool, str]:
    encoded = encode_user_data(rendered.user_data)
    decoded = gzip.decompress(b64decode(encoded)).decode()
    leaked = [k for k, v in cfg.secrets().items() if v in rendered.user_data or v in decoded or v in encoded]
    if leaked:
        return False, f"secret values found in user-data: {', '.join(leaked)}"
    return True, f"none of the {len(cfg.secrets())} secret value(s) appear in user-data"


def check_size(rendered: Rendered) -> tuple[bool, str]:
    size = len(encode_user_data(rendered.user_data))
    return size <= OCI_METADATA_LIMIT, (f"{size} bytes as OCI metadata (gzip+base64; limit {OCI_METADATA_LIMIT}); "
                                        f"{len(rendered.user_data)} bytes plain")


def run_all(cfg: StackConfig, rendered: Rendered | None = None) -> list[Check]:
    rendered = rendered or render(cfg)
    checks = [
        _timed("cloud-init schema", lambda: check_cloud_init_schema(rendered.user_data)),
        _timed("cloud-init top-level keys", lambda: check_top_level_keys(rendered.user_data)),
        _timed("no secrets in user-data", lambda: check_no_secrets(cfg, rendered)),
        _timed("user-data size", lambda: check_size(rendered)),
        _timed("nginx -t", lambda: check_nginx(cfg)),
    ]
    for f in rendered.shell_scripts():
        checks.append(_timed(f"shellcheck {Path(f.path).name}", lambda f=f: check_shell(f.path, f.content)))
    return checks
