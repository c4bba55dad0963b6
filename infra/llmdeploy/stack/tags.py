"""The freeform tags every taggable resource carries; teardown and the reaper find resources by them."""
from __future__ import annotations

from ..config import StackConfig

MANAGED_BY = ("managed-by", "llmdeploy")  # the tag teardown and the reaper look for


def freeform_tags(cfg: StackConfig, project: str, attendee: str = "") -> dict[str, str]:
    tags = dict(cfg.tags)
    tags.update({"project": project, "stack": cfg.stack, MANAGED_BY[0]: MANAGED_BY[1]})
    if attendee:
        tags["attendee"] = attendee
    if cfg.expires_at:
        tags["expires-at"] = cfg.expires_at
    return tags
