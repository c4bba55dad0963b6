"""Test support for llmdeploy's integration tests: real servers and files on loopback.

Why: the project's configs and templates are proven against real programs (llama.cpp via
xllamacpp, nginx, openssl) rather than by reading text. Each helper that starts a process runs
it in its own process group and stops it by PID when its context manager exits, also on failure.

Modules:
    tinymodel    write_tiny_gguf(): a tiny random llama GGUF with a real vocab and chat template
    llamaserver  llama_server(): xllamacpp's llama.cpp HTTP server in a child process
    certs        make_ca(), issue_leaf(), self_signed(): test certificates via the openssl CLI
    nginx        nginx_test(), run_nginx(): `nginx -t` and a foreground nginx in a work dir
    sse_backend  sse_backend(): a stub backend streaming slow SSE without X-Accel-Buffering
    ports        free_port(), port_open()
    procs        start/stop helper processes by PID (used by llamaserver and nginx)
"""
