"""Image settings for chatUi biochatter-next in tests: well-formed digests for the parser (all one pattern, so no
one mistakes them for a real image's); nothing is pulled here."""
DIGEST = "sha256:" + "0123456789abcdef" * 4
SERVER = f"biocypher/biochatter-server@{DIGEST}"
CLIENT = f"registry.example.org/biochatter-next@{DIGEST}"
