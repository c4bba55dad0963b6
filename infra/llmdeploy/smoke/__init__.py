"""`llmdeploy smoke`: prove an endpoint works. Each check is a function returning a CheckResult."""
