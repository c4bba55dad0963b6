"""Day two: the operator's commands for a running endpoint, the same for a local stack's VM and a cloud VM over
SSH (access): who used it (usage, usage_report), how it is (status), what it logged (logs)."""
