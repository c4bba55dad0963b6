"""The Pulumi side of llmdeploy: one component per target, built from a validated StackConfig.

Components never read config; `pulumi_config.load_raw()` is the only place that touches pulumi.Config.
"""
