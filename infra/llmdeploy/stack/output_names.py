"""Stack output names, kept in one place so the program, scripts and tests agree on them."""

ENDPOINT_URL = "endpointUrl"
OPENAI_BASE_URL = "openaiBaseUrl"
MODEL_NAME = "modelName"
API_KEYS = "apiKeys"  # secret: {key name: key}
SSH_COMMAND = "sshCommand"
PUBLIC_IP = "publicIp"
CURL_EXAMPLE = "curlExample"  # reads the key from $LLMDEPLOY_API_KEY, so it is not a secret
CA_CERTIFICATE = "caCertificate"  # the VM's own CA, for tlsMode self-signed (public)
SMOKE_REPORT = "smokeReport"
CHAT_URL = "chatUrl"  # the chat frontend's sign-in page (chatUi), when there is one


# Workshops (secret): {attendee id: {"name", "email", "endpointUrl", "openaiBaseUrl", "apiKey", "model",
# "caCertificate", "endpoint"[, "chatUrl"]}} where "endpoint" names the VM that serves the attendee (its own, or ep<N>).
ATTENDEES = "attendees"
WORKSHOP_ENDPOINTS = "workshopEndpoints"  # {attendee id or ep<N>: endpoint URL}
SECRET_OUTPUTS = frozenset({API_KEYS, ATTENDEES})
