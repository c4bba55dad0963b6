"""A Debian 12 VM image built once with debootstrap and cached: kernel, initrd and a qcow2 root disk.

The image holds what OCI's Ubuntu platform images hold (systemd, a kernel, cloud-init, openssh-server, curl,
sudo, unattended-upgrades, and iptables-persistent loading OCI's /etc/iptables/rules.v4 at boot, with its
InstanceServices chain), with the point releases and security updates applied, and nothing of llmdeploy's:
the stack's own steps install the rest at boot (Python's venv, nginx, certbot, the engine), as on a cloud VM.
Two things it must have that a minbase debootstrap lacks: python3-cffi-backend (without it cloud-init is left
unconfigured) and the en_US.UTF-8 locale (cloud-init's locale module fails without it). cloud-init only
looks for a NoCloud seed, so it does not spend a minute probing cloud metadata services, and makes no RSA
host key (20 s under TCG).

The configured root filesystem is cached too, as a folder next to the disk (images/<key>/rootfs): the
systemd container runtime (nspawn.py) boots copies of it, and the VM's disk is made from it by
`mkfs.ext4 -d`, so both runtimes boot the same tree. Each part is built in a temporary folder next to the
cache and renamed into place only when complete, so a failed or interrupted build leaves nothing behind; a
lock file keeps two builds from racing.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import Failure
from . import paths

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
DISK_SIZE = "12G"  # sparse: the qcow2 holds only what is written
BUILD_VERSION = 4  # bump when the build steps change, so old caches are not reused

PACKAGES = (
    "systemd-sysv", "udev", "dbus", "linux-image-cloud-amd64", "cloud-init", "openssh-server",
    "ca-certificates", "ifupdown", "isc-dhcp-client", "iproute2", "netbase", "sudo", "curl",
    "python3-cffi-backend",  # cloud-init stays unconfigured without it
    "locales",  # en_US.UTF-8, which cloud-init's locale module sets
)
# Installed after the updates, as a cloud image ships them. OCI's Ubuntu images have iptables-persistent, not
# ufw (ufw's package breaks iptables-persistent).
CLOUD_IMAGE_PACKAGES = ("iptables", "iptables-persistent", "unattended-upgrades")
# iptables-persistent saves the running rules on install unless told not to; in a chroot those are the host's.
DEBCONF = """\
iptables-persistent iptables-persistent/autosave_v4 boolean false
iptables-persistent iptables-persistent/autosave_v6 boolean false
"""
_OCI_RULE = ('-m comment --comment "See the Oracle-Provided Images section in the Oracle Cloud Infrastructure '
             'documentation for security impact of modifying or removing this rule"')
# /etc/iptables/rules.v4 of OCI's Ubuntu platform images (as quoted from Ubuntu 22.04 instances, e.g.
# wiki.drake.org.uk "Oracle Cloud Hosting: Configuring default IPTables on a Virtual Machine"): inbound only
# SSH (and NTP answers), and InstanceServices lets only root reach the iSCSI boot volume and kernel updates.
OCI_RULES_V4 = "\n".join([
    "# CLOUD_IMG: This file was created/modified by the Cloud Image build process",
    "# iptables configuration for Oracle Cloud Infrastructure",
    "",
    "# See the Oracle-Provided Images section in the Oracle Cloud Infrastructure",
    "# documentation for security impact of modifying or removing these rule",
    "",
    "*filter",
    ":INPUT ACCEPT [0:0]",
    ":FORWARD ACCEPT [0:0]",
    ":OUTPUT ACCEPT [0:0]",
    ":InstanceServices - [0:0]",
    "-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT",
    "-A INPUT -p icmp -j ACCEPT",
    "-A INPUT -i lo -j ACCEPT",
    "-A INPUT -p udp --sport 123 -j ACCEPT",
    "-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT",
    "-A INPUT -j REJECT --reject-with icmp-host-prohibited",
    "-A FORWARD -j REJECT --reject-with icmp-host-prohibited",
    "-A OUTPUT -d 169.254.0.0/16 -j InstanceServices",
    *(f"-A InstanceServices -d {dest} -p tcp -m owner --uid-owner 0 -m tcp --dport 3260 {_OCI_RULE} -j ACCEPT"
      for dest in ("169.254.0.2/32", "169.254.2.0/24", "169.254.4.0/24", "169.254.5.0/24")),
    f"-A InstanceServices -d 169.254.0.2/32 -p tcp -m tcp --dport 80 {_OCI_RULE} -j ACCEPT",
    f"-A InstanceServices -d 169.254.169.254/32 -p udp -m udp --dport 53 {_OCI_RULE} -j ACCEPT",
    f"-A InstanceServices -d 169.254.169.254/32 -p tcp -m tcp --dport 53 {_OCI_RULE} -j ACCEPT",
    f"-A InstanceServices -d 169.254.0.3/32 -p tcp -m owner --uid-owner 0 -m tcp --dport 80 {_OCI_RULE} -j ACCEPT",
    f"-A InstanceServices -d 169.254.0.4/32 -p tcp -m tcp --dport 80 {_OCI_RULE} -j ACCEPT",
    f"-A InstanceServices -d 169.254.169.254/32 -p tcp -m tcp --dport 80 {_OCI_RULE} -j ACCEPT",
    f"-A InstanceServices -d 169.254.169.254/32 -p udp -m udp --dport 67 {_OCI_RULE} -j ACCEPT",
    f"-A InstanceServices -d 169.254.169.254/32 -p udp -m udp --dport 69 {_OCI_RULE} -j ACCEPT",
    f"-A InstanceServices -d 169.254.169.254/32 -p udp --dport 123 {_OCI_RULE} -j ACCEPT",
    f"-A InstanceServices -d 169.254.0.0/16 -p tcp -m tcp {_OCI_RULE} -j REJECT --reject-with tcp-reset",
    f"-A InstanceServices -d 169.254.0.0/16 -p udp -m udp {_OCI_RULE} -j REJECT --reject-with icmp-port-unreachable",
    "COMMIT",
    "",
])
HOST_TOOLS = {"debootstrap": "debootstrap", "mkfs.ext4": "e2fsprogs", "qemu-img": "qemu-utils", "chroot": "coreutils"}

CLOUD_CFG = """\
# llmdeploy local: the seed is a NoCloud ISO (label cidata) in the VM, a seed folder in the container;
# do not probe cloud metadata services.
datasource_list: [NoCloud, None]
# The hostname resolves (sudo complains otherwise), as on cloud images.
manage_etc_hosts: localhost
# The host keys sshd serves (templates/files/sshd-llmdeploy.conf): Ed25519 and RSA, no ECDSA. RSA takes ~20 s
# under TCG; 11-sshd would make it anyway, so the console lists both keys either way.
ssh_genkeytypes: [ed25519, rsa]
"""
INTERFACES = """\
# cloud-init writes the interface it configures to interfaces.d/
source /etc/network/interfaces.d/*
auto lo
iface lo inet loopback
"""


class ImageError(Failure):
    """The image cannot be built; the message says why and what to do."""


@dataclass(frozen=True)
class Image:
    folder: Path

    @property
    def kernel(self) -> Path:
        return self.folder / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.folder / "initrd.img"

    @property
    def disk(self) -> Path:
        return self.folder / "root.qcow2"

    @property
    def rootfs(self) -> Path:
        """The configured tree the disk was made from; a folder only once complete (renamed into place)."""
        return self.folder / "rootfs"

    @property
    def manifest(self) -> dict[str, object]:
        return json.loads((self.folder / "manifest.json").read_text())

    def complete(self) -> bool:
        return all(p.is_file() for p in (self.kernel, self.initrd, self.disk, self.folder / "manifest.json"))


def host_mirror(sources_dir: Path = Path("/etc/apt")) -> tuple[str, str]:
    """The Debian mirror this machine's APT uses (deb822 or one-line format), and its security mirror;
    the guest reaches the same mirrors through QEMU's user-mode network."""
    texts = []
    for path in [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*"))]:
        if path.is_file() and (path.suffix in (".list", ".sources") or path.name == "sources.list"):
            try:
                texts.append(path.read_text(errors="replace"))
            except OSError:
                continue
    uris = re.findall(r"^\s*URIs:\s*(\S+)", "\n".join(texts), re.M)
    uris += re.findall(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", "\n".join(texts), re.M)
    uris = [u.rstrip("/") for u in uris if u.startswith(("http://", "https://"))]
    main = next((u for u in uris if re.search(r"/debian$", u)), DEFAULT_MIRROR)
    security = next((u for u in uris if u.endswith("/debian-security")), DEFAULT_SECURITY_MIRROR)
    return main, security


def cache_key(mirror: str) -> str:
    spec = json.dumps({"suite": SUITE, "packages": PACKAGES, "extra": CLOUD_IMAGE_PACKAGES, "version": BUILD_VERSION,
                       "mirror": mirror, "disk": DISK_SIZE, "rules.v4": OCI_RULES_V4, "debconf": DEBCONF},
                      sort_keys=True)
    return f"debian-12-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


def cached_image(mirror: str | None = None) -> Image | None:
    image = Image(paths.images_dir() / cache_key(mirror or host_mirror()[0]))
    return image if image.complete() else None


def missing_image_tools() -> list[str]:
    return sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})


@contextmanager
def _lock(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _mounts_under(path: Path) -> list[str]:
    found = []
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as fh:
        for line in fh:
            target = line.split()[1].replace("\\040", " ")
            if target.startswith(prefix):
                found.append(target)
    return sorted(found, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """Remove a build folder; first unmount anything a failed debootstrap left mounted inside (/proc, /sys)."""
    if not path.exists():
        return
    for target in _mounts_under(path):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False, capture_output=True)


def _checked_host(what: str) -> None:
    problems = missing_image_tools()
    if problems:
        raise ImageError(f"building {what} needs {', '.join(problems)}: apt-get install {' '.join(problems)} "
                         "(scripts/setup.sh installs them)")
    if os.geteuid() != 0:
        raise ImageError(f"building {what} needs root (debootstrap and chroot); run "
                         "`sudo llmdeploy local image` once, then `llmdeploy local up` as yourself")


@contextmanager
def _building(folder: Path) -> Iterator[Path]:
    """A temporary build folder next to the cache, removed again whatever happens."""
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=folder))
    try:
        yield work
    finally:
        remove_tree(work)


def _ensure_rootfs(image: Image, mirror: str, security: str, log: Callable[[str], None]) -> bool:
    """The configured root filesystem under image.rootfs, built now if missing (the lock is held)."""
    if image.rootfs.is_dir():
        return False
    _checked_host("the Debian 12 root filesystem")
    with _building(image.folder.parent) as work:
        start = time.monotonic()
        _build_rootfs(work / "rootfs", mirror, security, work / "build.log", log)
        (work / "rootfs").chmod(0o755)
        image.folder.mkdir(mode=0o755, exist_ok=True)
        (work / "rootfs").rename(image.rootfs)
        log(f"  root filesystem ready in {time.monotonic() - start:.0f}s")
    return True


def ensure_rootfs(log: Callable[[str], None] = print, mirror: str | None = None) -> tuple[Image, bool]:
    """The cached image folder with its configured root filesystem (what the container runtime boots),
    building the tree first if there is none; the disk is not made. Returns (image, built_now)."""
    mirror, security = (mirror, DEFAULT_SECURITY_MIRROR) if mirror else host_mirror()
    folder = paths.images_dir()
    with _lock(folder):
        image = Image(folder / cache_key(mirror))
        return image, _ensure_rootfs(image, mirror, security, log)


def ensure_image(log: Callable[[str], None] = print, mirror: str | None = None) -> tuple[Image, bool]:
    """The cached image (kernel, initrd, disk), building it first if there is none. Returns (image, built_now)."""
    mirror, security = (mirror, DEFAULT_SECURITY_MIRROR) if mirror else host_mirror()
    folder = paths.images_dir()
    with _lock(folder):
        image = Image(folder / cache_key(mirror))
        if image.complete():
            return image, False
        _checked_host("the VM image")
        start = time.monotonic()
        _ensure_rootfs(image, mirror, security, log)
        with _building(folder) as work:
            _build_disk(image.rootfs, work, mirror, start, log)
            for name in ("vmlinuz", "initrd.img", "root.qcow2", "manifest.json"):  # the manifest last: complete()
                (work / name).rename(image.folder / name)
        return image, True


def probe_kernel(log: Callable[[str], None] = print) -> Path:
    """A kernel for the KVM probe: the cached image's, else the cached root filesystem's (built now if there is
    none: both runtimes boot it, so nothing is built in vain)."""
    found = cached_image()
    if found is not None:
        return found.kernel
    img, _ = ensure_rootfs(log)
    return _newest_kernel(img.rootfs)[0]


def _run(cmd: list[str], logfile: Path, what: str, env: dict[str, str] | None = None) -> None:
    with open(logfile, "ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    if proc.returncode != 0:
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-25:])
        raise ImageError(f"{what} failed (exit {proc.returncode}); last lines of {logfile}:\n{tail}")


def _build_rootfs(rootfs: Path, mirror: str, security: str, logfile: Path, log: Callable[[str], None]) -> None:
    start = time.monotonic()
    log(f"building the Debian 12 root filesystem (once; cached in {rootfs.parent.parent}) from {mirror} ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", "--components=main",
          SUITE, str(rootfs), mirror], logfile, "debootstrap", env)
    log(f"  debootstrap done in {time.monotonic() - start:.0f}s")
    _configure(rootfs, mirror, security, logfile, env)


def _build_disk(rootfs: Path, work: Path, mirror: str, start: float, log: Callable[[str], None]) -> None:
    """Kernel, initrd and the qcow2 disk made from the configured tree, with the manifest, in `work`."""
    logfile = work / "build.log"
    kernel, initrd = _newest_kernel(rootfs)
    shutil.copyfile(kernel, work / "vmlinuz")
    shutil.copyfile(initrd, work / "initrd.img")
    raw = work / "root.raw"
    _run(["truncate", "-s", DISK_SIZE, str(raw)], logfile, "truncate")
    _run(["mkfs.ext4", "-q", "-F", "-L", "llmdeploy-root", "-d", str(rootfs), str(raw)], logfile, "mkfs.ext4 -d")
    _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "root.qcow2")], logfile, "qemu-img convert")
    raw.unlink()
    manifest = {"suite": SUITE, "mirror": mirror, "packages": list(PACKAGES) + list(CLOUD_IMAGE_PACKAGES),
                "kernel": kernel.name,
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": round(time.monotonic() - start, 1), "version": BUILD_VERSION}
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"  image ready in {time.monotonic() - start:.0f}s")


def _version_key(path: Path) -> list[int]:
    return [int(n) for n in re.findall(r"[0-9]+", path.name)]


def _newest_kernel(rootfs: Path) -> tuple[Path, Path]:
    """The newest kernel and its initrd under /boot (after the upgrade there may be two)."""
    boot = rootfs / "boot"
    kernels = sorted(boot.glob("vmlinuz-*"), key=_version_key)
    if not kernels:
        raise ImageError(f"no kernel under {boot} after debootstrap")
    kernel = kernels[-1]
    initrd = boot / kernel.name.replace("vmlinuz-", "initrd.img-", 1)
    if not initrd.is_file():
        raise ImageError(f"no initrd for {kernel.name} under {boot}")
    return kernel, initrd


def _configure(rootfs: Path, mirror: str, security: str, logfile: Path, env: dict[str, str]) -> None:
    def put(rel: str, text: str, mode: int = 0o644) -> None:
        dest = rootfs / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        dest.chmod(mode)

    put("etc/hostname", "llmdeploy-local\n")
    put("etc/hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    put("etc/fstab", "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n")
    put("etc/network/interfaces", INTERFACES)
    put("etc/apt/sources.list", f"deb {mirror} {SUITE} main\ndeb {mirror} {SUITE}-updates main\n"
                                f"deb {security} {SUITE}-security main\n")
    put("etc/cloud/cloud.cfg.d/90-llmdeploy-local.cfg", CLOUD_CFG)
    put("etc/apt/apt.conf.d/90llmdeploy-no-translations", 'Acquire::Languages "none";\n')
    put("etc/locale.gen", "en_US.UTF-8 UTF-8\n")
    put("etc/default/locale", "LANG=en_US.UTF-8\n")
    _run(["chroot", str(rootfs), "locale-gen"], logfile, "locale-gen", env)
    put("etc/iptables/rules.v4", OCI_RULES_V4, 0o640)
    put("var/tmp/llmdeploy-debconf", DEBCONF)
    # Updates and the cloud-image packages; no service may start inside the chroot.
    put("usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)
    proc = rootfs / "proc"
    _run(["mount", "-t", "proc", "proc", str(proc)], logfile, "mount /proc in the chroot")
    try:
        for cmd in (["debconf-set-selections", "/var/tmp/llmdeploy-debconf"],
                    ["apt-get", "update", "-q"], ["apt-get", "upgrade", "-y", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", *CLOUD_IMAGE_PACKAGES],
                    ["apt-get", "clean"]):
            _run(["chroot", str(rootfs), *cmd], logfile, " ".join(cmd[:2]), env)
    finally:
        subprocess.run(["umount", "-l", str(proc)], check=False, capture_output=True)
    (rootfs / "usr/sbin/policy-rc.d").unlink()
    (rootfs / "var/tmp/llmdeploy-debconf").unlink()
    if (rootfs / "etc/iptables/rules.v4").read_text() != OCI_RULES_V4:
        raise ImageError("installing iptables-persistent in the image overwrote /etc/iptables/rules.v4")
    # Every VM gets its own identity: systemd makes a machine-id and cloud-init new SSH host keys at first boot.
    put("etc/machine-id", "")
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    for leftover in ("var/lib/dbus/machine-id",):
        (rootfs / leftover).unlink(missing_ok=True)
    shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
