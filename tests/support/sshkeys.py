"""OpenSSH public key lines of real size and shape without generating keys (RSA-4096 generation takes seconds):
an `ssh-rsa` blob with e = 65537 and a random 4096-bit modulus is 535 bytes, 716 in base64, as `ssh-keygen -t rsa
-b 4096` writes it. Random bytes, so gzip cannot shrink them, as it cannot shrink real keys."""
from __future__ import annotations

import base64
import random
import struct


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def rsa_4096_public_keys(count: int, seed: int = 4096) -> list[str]:
    rng = random.Random(seed)
    keys = []
    for i in range(count):
        modulus = bytes([0]) + bytes([0x80 | rng.randrange(128)]) + rng.randbytes(511)  # 4096 bits, positive
        blob = _string(b"ssh-rsa") + _string(b"\x01\x00\x01") + _string(modulus)
        keys.append(f"ssh-rsa {base64.b64encode(blob).decode()} operator{i}@workstation.example.org")
    return keys
