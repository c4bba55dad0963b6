"""A throwaway "VM" reachable over real SSH, for the SSH smoke checks.

Why: those checks log in and run commands (cloud-init status, stage markers, systemctl, ss, df).
Debian's own sshd runs on a free loopback port with a throwaway host key (`UsePAM no`, its own
PidFile, authorized keys from a temporary directory), inside a private mount namespace
(`unshare --mount`) where the VM's paths are bind-mounted from a temporary directory:
/etc/llmdeploy, /var/lib/llmdeploy, /var/lib/cloud, /var/log. Overlays on /etc and /var/lib add
the admin user (`llmadmin`, NOPASSWD sudo as cloud-init writes it) and the mount points, so the
real machine is never written to. `ss`, `df`, `sudo` and /proc are real. Programs that need a
booted systemd or a cloud-init run (cloud-init, systemctl, journalctl, nvidia-smi) are small
stand-ins mounted over /usr/local/sbin, which comes first on root's PATH and sudo's secure_path;
they print what the real ones print and exit as they do, from state a test edits while sshd runs.
sshd is stopped by PID (its process group) when the with-block ends.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .ports import LOOPBACK, free_port, port_open
from .procs import start_process, stop_process, wait_until

ADMIN = "llmadmin"
# VM path -> directory under the fake VM's base, bind-mounted (live: tests may edit while sshd runs).
VM_MOUNTS = {"/etc/llmdeploy": "etc_llmdeploy", "/var/lib/llmdeploy": "var_lib_llmdeploy",
             "/var/lib/cloud": "var_lib_cloud", "/var/log": "var_log"}
FAKE_STATE = "/run/fakevm"  # where the stand-ins read their state, inside the namespace


def sshd_argv(*args: str) -> list[str]:
    """/usr/sbin/sshd with `args`, in a private mount namespace whose /run is an empty tmpfs holding the
    privilege-separation directory /run/sshd. Debian's unit creates that directory (RuntimeDirectory=sshd); a
    machine where the service never ran has none, and sshd (also `sshd -T`) then exits 255. The host's /run is
    neither read nor written. exec keeps the PID, so stop-by-PID stops sshd itself."""
    setup = 'mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -m 0755 /run/sshd && exec /usr/sbin/sshd "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup, "sshd", *args]

SSHD_CONFIG = """\
ListenAddress {listen}
{host_keys}
PidFile {pid_file}
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile /home/.authorized_keys/%u
PrintMotd no
PrintLastLog no
LogLevel VERBOSE
MaxStartups 100
"""

# Runs as root inside the new mount namespace, then becomes sshd (same PID, so stop-by-PID works).
NAMESPACE_SETUP = """\
set -euo pipefail
overlay() {{ mount -t overlay overlay -o "lowerdir=$1,upperdir=$2/upper,workdir=$2/work" "$1"; }}
overlay /etc {base}/overlay/etc
overlay /var/lib {base}/overlay/var_lib
mkdir -p /etc/llmdeploy /var/lib/llmdeploy /var/lib/cloud
{binds}
mount --bind {base}/home /home
mount --bind {base}/bin /usr/local/sbin
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -m 0755 /run/sshd {fake_state}
mount --bind {base}/fake {fake_state}
useradd --create-home --shell /bin/bash --groups sudo {admin}
usermod -p '*' {admin}  # no password, not locked ('!' would refuse key logins without PAM)
printf '{admin} ALL=(ALL) NOPASSWD:ALL\\n' >/etc/sudoers.d/90-cloud-init-users
chmod 0440 /etc/sudoers.d/90-cloud-init-users
exec /usr/sbin/sshd -D -e -f {config}
"""

# cloud-init >= 23.4 `status [--wait] [--long]` (cloudinit/cmd/status.py): with --wait a dot per 0.25 s
# while running, then a newline; status is "error" when the condition is error, else the running state;
# exit 1 on error, 2 on recoverable errors (degraded), else 0.
FAKE_CLOUD_INIT = r"""#!/bin/sh
# Stand-in for `cloud-init status [--wait] [--long]` (cloud-init >= 23.4) reading /run/fakevm/cloud-init.
s=/run/fakevm/cloud-init
[ "${1:-}" = status ] || { echo "fake cloud-init: only 'status' is implemented" >&2; exit 2; }
shift
wait=0 long=0
for arg in "$@"; do
  case $arg in
    --wait|-w) wait=1 ;;
    --long|-l) long=1 ;;
    *) echo "fake cloud-init: unsupported argument $arg" >&2; exit 2 ;;
  esac
done
running=$(cat "$s/running")
if [ "$wait" = 1 ]; then
  while [ "$running" = running ] || [ "$running" = "not started" ]; do
    printf .
    sleep 0.25
    running=$(cat "$s/running")
  done
  echo
fi
condition=$(cat "$s/condition")
case $condition in
  error) status=error extended="error - $running" rc=1 ;;
  degraded) status=$running extended="degraded $running" rc=2 ;;
  *) status=$running extended=$running rc=0 ;;
esac
echo "status: $status"
if [ "$long" = 1 ]; then
  echo "extended_status: $extended"
  echo "boot_status_code: enabled-by-generator"
  [ "$running" = done ] && echo "last_update: $(date -u -R)"
  echo "detail: DataSourceOracle"
  if [ -s "$s/errors" ]; then echo "errors:"; sed 's/^/\t- /' "$s/errors"; else echo "errors: []"; fi
  if [ -s "$s/warnings" ]; then
    echo "recoverable_errors:"; echo "WARNING:"; sed 's/^/\t- /' "$s/warnings"
  else
    echo "recoverable_errors: {}"
  fi
fi
exit "$rc"
"""

# systemctl is-active: one ActiveState per unit; exit 0 if any is active, else 3 (also for unknown units).
FAKE_SYSTEMCTL = r"""#!/bin/sh
# Stand-in for `systemctl is-active [--quiet] UNIT...` reading /run/fakevm/units/UNIT.
[ "${1:-}" = is-active ] || { echo "fake systemctl: only is-active is implemented" >&2; exit 1; }
shift
quiet=0 rc=3
for unit in "$@"; do
  case $unit in --quiet|-q) quiet=1; continue ;; esac
  state=$(cat "/run/fakevm/units/${unit%.service}" 2>/dev/null || echo inactive)
  [ "$quiet" = 1 ] || echo "$state"
  [ "$state" = active ] && rc=0
done
exit "$rc"
"""

# journalctl -u UNIT -n N: the last N lines in journalctl's short format, or "-- No entries --".
FAKE_JOURNALCTL = r"""#!/bin/sh
# Stand-in for `journalctl -u UNIT [-n N] [--no-pager]` reading /run/fakevm/journal/UNIT.
unit="" lines=""
while [ $# -gt 0 ]; do
  case $1 in
    -u|--unit) unit=${2%.service}; shift ;;
    -n|--lines) lines=$2; shift ;;
    --no-pager) ;;
    *) echo "fake journalctl: unsupported option $1" >&2; exit 1 ;;
  esac
  shift
done
f=/run/fakevm/journal/$unit
if [ ! -s "$f" ]; then echo "-- No entries --"; exit 0; fi
if [ -n "$lines" ]; then tail -n "$lines" "$f"; else cat "$f"; fi
"""

# nvidia-smi without a working driver prints this on stdout and exits 9.
FAKE_NVIDIA_SMI = r"""#!/bin/sh
# Stand-in for `nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader`.
if [ "$*" != "--query-gpu=name,memory.total,driver_version --format=csv,noheader" ]; then
  echo "fake nvidia-smi: unsupported arguments: $*" >&2; exit 2
fi
if [ ! -s /run/fakevm/gpus ]; then
  echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." \
    "Make sure that the latest NVIDIA driver is installed and running."
  exit 9
fi
cat /run/fakevm/gpus
"""

FAKES = {"cloud-init": FAKE_CLOUD_INIT, "systemctl": FAKE_SYSTEMCTL, "journalctl": FAKE_JOURNALCTL,
         "nvidia-smi": FAKE_NVIDIA_SMI}


@dataclass
class FakeVm:
    """State of the fake VM, on this machine; changes are seen by the next command over SSH."""

    base: Path

    def path(self, vm_path: str) -> Path:
        """Where a VM path under one of VM_MOUNTS lives on this machine."""
        for mount, local in VM_MOUNTS.items():
            if vm_path == mount or vm_path.startswith(mount + "/"):
                return self.base / local / vm_path[len(mount):].lstrip("/")
        raise ValueError(f"{vm_path} is not under one of {sorted(VM_MOUNTS)}")

    def write(self, vm_path: str, content: str) -> Path:
        dest = self.path(vm_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(content)
        return dest

    def _fake(self, *parts: str) -> Path:
        p = self.base / "fake" / Path(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def set_cloud_init(self, running: str = "done", condition: str = "healthy", errors: tuple[str, ...] = (),
                       warnings: tuple[str, ...] = ()) -> None:
        """running: not started | running | done; condition: healthy | degraded | error."""
        self._fake("cloud-init", "running").write_text(running + "\n")
        self._fake("cloud-init", "condition").write_text(condition + "\n")
        self._fake("cloud-init", "errors").write_text("".join(f"{e}\n" for e in errors))
        self._fake("cloud-init", "warnings").write_text("".join(f"{w}\n" for w in warnings))

    def set_unit(self, unit: str, state: str, journal: list[str] | None = None) -> None:
        """state: active | inactive | failed | activating ...; journal lines in journalctl's short format."""
        self._fake("units", unit).write_text(state + "\n")
        if journal is not None:
            self._fake("journal", unit).write_text("".join(f"{line}\n" for line in journal))

    def set_gpus(self, lines: list[str]) -> None:
        """CSV lines as nvidia-smi prints them ("NVIDIA A10, 23028 MiB, 550.90.07"); [] means no driver."""
        self._fake("gpus").write_text("".join(f"{line}\n" for line in lines))

    def write_vm_facts(self, info: dict[str, object]) -> None:
        self.write("/etc/llmdeploy/stack.json", json.dumps(info, indent=2) + "\n")

    def mark(self, step: str, outcome: str, content: str = "") -> None:
        """A stage marker as the step runner writes it: <step>.done (a time) or <step>.failed (exit=N)."""
        self.write(f"/var/lib/llmdeploy/stages/{step}.{outcome}", content or "2026-01-01T00:00:00Z\n")


@dataclass(frozen=True)
class Sshd:
    pid: int
    host: str
    port: int
    host_key_line: str  # "ssh-ed25519 AAAA..." as in known_hosts
    client_key: Path  # private key that may log in as root and as ADMIN
    log: Path
    vm: FakeVm


def keygen(path: Path, comment: str, key_type: str = "ed25519") -> str:
    """A throwaway key pair (no passphrase; RSA of 3072 bits); returns the public key line."""
    size = ["-b", "3072"] if key_type == "rsa" else []
    subprocess.run(["ssh-keygen", "-q", "-t", key_type, *size, "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, timeout=60)
    return Path(f"{path}.pub").read_text().strip()


def prepare(base: Path) -> FakeVm:
    """The fake VM's directories and stand-ins, with a healthy default state (cloud-init done)."""
    for d in [*VM_MOUNTS.values(), "bin", "home/.authorized_keys", "fake", "overlay/etc/upper", "overlay/etc/work",
              "overlay/var_lib/upper", "overlay/var_lib/work"]:
        (base / d).mkdir(parents=True, exist_ok=True)
    for d in ("home", "home/.authorized_keys", "fake", "bin"):
        (base / d).chmod(0o755)
    for name, script in FAKES.items():
        (base / "bin" / name).write_text(script)
        (base / "bin" / name).chmod(0o755)
    vm = FakeVm(base)
    vm.set_cloud_init()
    vm.path("/var/log/cloud-init-output.log").write_text("")
    return vm


@contextmanager
def run_sshd(base: Path, timeout: float = 15.0, include: str = "",
             host_key_types: tuple[str, ...] = ("ed25519",), listen: str = LOOPBACK, port: int = 0) -> Iterator[Sshd]:
    """sshd on a free loopback port in a private mount namespace over a fresh fake VM under `base`.

    `include` is an sshd_config fragment (llmdeploy's sshd-llmdeploy.conf) read before this file's own lines, as
    Debian's and Ubuntu's sshd_config include sshd_config.d/*.conf at their top; its HostKey paths under /etc/ssh
    are moved to the throwaway keys, one per `host_key_types` (the first one is `host_key_line`). `listen` and `port`
    (default: a free one) place it: VMs of a workshop are several loopback addresses on one port."""
    base = base.resolve()
    vm = prepare(base)
    keys = base / "keys"
    keys.mkdir(exist_ok=True)
    pubs = {t: keygen(keys / f"ssh_host_{t}_key", "llmdeploy-test-host", t) for t in host_key_types}
    host_pub = pubs[host_key_types[0]]
    client_pub = keygen(keys / "client", "llmdeploy-test-client")
    for user in ("root", ADMIN):
        (base / "home" / ".authorized_keys" / user).write_text(client_pub + "\n")
        (base / "home" / ".authorized_keys" / user).chmod(0o644)
    port = port or free_port(listen)
    config = base / "sshd_config"
    # The fragment's HostKey lines, when it has any, name the keys (sshd would load a key listed twice twice).
    own_keys = not re.search(r"^\s*HostKey\s", include, re.M | re.I)
    host_keys = "\n".join(f"HostKey {keys / f'ssh_host_{t}_key'}" for t in host_key_types if own_keys)
    text = SSHD_CONFIG.format(listen=f"{listen}:{port}", host_keys=host_keys, pid_file=base / "sshd.pid")
    if include:
        fragment = base / "sshd_config.d.conf"
        fragment.write_text(include.replace("/etc/ssh/ssh_host_", f"{keys}/ssh_host_"))
        text = f"Include {fragment}\n{text}"
    config.write_text(text)
    binds = "\n".join(f"mount --bind {shlex.quote(str(base / local))} {mount}" for mount, local in VM_MOUNTS.items())
    setup = NAMESPACE_SETUP.format(base=shlex.quote(str(base)), binds=binds, admin=ADMIN, fake_state=FAKE_STATE,
                                   config=shlex.quote(str(config)))
    log = base / "sshd.log"
    proc = start_process(["unshare", "--mount", "--propagation", "private", "bash", "-c", setup], log)
    try:
        wait_until(lambda: None if port_open(port, listen) else f"no listener on {listen}:{port}", proc, timeout,
                   "sshd", log)
        host_key_line = " ".join(host_pub.split()[:2])
        yield Sshd(proc.pid, listen, port, host_key_line, keys / "client", log, vm)
    finally:
        stop_process(proc)


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
