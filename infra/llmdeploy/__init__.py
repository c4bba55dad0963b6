"""llmdeploy: typed stack config, user-data rendering and validation for authenticated LLM endpoints.

This package lives under infra/ because `pulumi up` runs infra/__main__.py with infra/ on sys.path;
the `llmdeploy` command (pip install -e .) imports the very same modules.
"""
