"""`llmdeploy workshop plan`: before any `pulumi up`, can this workshop work, and what will it cost?

For the roster's active attendees and the layout, the endpoints `pulumi up` would create (the same
llmdeploy.endpoints code the Pulumi program runs, so overrides and validation match), then one line
per check:
- the instances and GPUs per shape;
- each service limit they use against what the tenancy has available in the availability domain the program
  uses (OCI's limits API, or a limits file offline), naming the shortfall and any AD that would fit;
- the Let's Encrypt budget: dedicated endpoints each need a certificate for their own hostname, and Let's
  Encrypt issues at most 50 certificates per registered domain per week (and 5 duplicates of one certificate
  per week), so a big roster, or re-creating it within a week, runs out;
- DNS (the zone holds the hostnames) and expiresAt (so `llmdeploy reap --expired` can clean up);
- the cost: the hourly list price per shape (llmdeploy.workshop.prices, one table with its source and date)
  times workshopHours and the number of instances.
Exit 0 when the plan can work (warnings allowed), 1 when a check failed, 2 for bad input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

from ..acme_roots import LE_STAGING
from ..config import StackConfig
from ..endpoints import EndpointPlan
from ..result import FAIL, PASS, WARN, CheckResult
from ..roster import Attendee, active
from ..shapes import Shape
from .limits import LimitsSource, Need, needs
from .prices import PRICE_SOURCE, PRICES_RECORDED, hourly

LE_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LE_CERTS_PER_DOMAIN_WEEK = 50  # production; https://letsencrypt.org/docs/rate-limits/
LE_DUPLICATES_PER_WEEK = 5
LE_STAGING_CERTS_PER_DOMAIN_WEEK = 30000
PSL_PATH = Path("/usr/share/publicsuffix/public_suffix_list.dat")  # Debian's publicsuffix package


# The width of a check's name in the plan's report.
NAME_WIDTH = 34


@dataclass
class Plan:
    stack: str
    layout: str
    attendees: int
    revoked: int
    endpoints: list[EndpointPlan]
    checks: list[CheckResult] = field(default_factory=list)
    total_cost: float = 0.0
    hours: int = 0

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == FAIL]

    def add(self, name: str, status: str, detail: str) -> None:
        self.checks.append(CheckResult(name, status, detail))

    def lines(self) -> list[str]:
        """One line per check; the plan computes, so its checks carry no time."""
        return [check.line(NAME_WIDTH, timed=False) for check in self.checks]

    @property
    def instances(self) -> int:
        return len(instance_shapes(self.endpoints))

    @property
    def gpus(self) -> int:
        return sum(p.cfg.cluster_gpus for p in self.endpoints)

    def summary(self) -> str:
        counts = {s: sum(1 for c in self.checks if c.status == s) for s in (PASS, WARN, FAIL)}
        head = (f"plan for stack '{self.stack}': {self.attendees} active attendee(s) ({self.revoked} revoked), "
                f"layout {self.layout}: {self.instances} instance(s), {self.gpus} GPU(s); estimated "
                f"${self.total_cost:,.2f} for {self.hours} h at list prices")
        tally = f"{counts[PASS]} passed, {counts[WARN]} warning(s), {counts[FAIL]} failed"
        verdict = ("the plan can work" if not self.failed else
                   "the plan cannot work: " + "; ".join(c.name for c in self.failed))
        return f"{head}\n{tally}: {verdict}"


def instance_shapes(endpoints: list[EndpointPlan]) -> list[tuple[str, int, int]]:
    """(shape, OCPUs, memory GB) per instance, a Ray cluster's head and workers each; OCPUs and memory count
    only for Flex shapes."""
    return [(shape.name, p.cfg.shape_ocpus if shape.flex else 0, p.cfg.shape_memory_gbs if shape.flex else 0)
            for p in endpoints for shape in p.cfg.machine_shapes()]


def build(cfg: StackConfig, attendees: list[Attendee], endpoints: list[EndpointPlan],
          source: LimitsSource | None, offline_reason: str = "", le_issued: int = 0,
          now: datetime | None = None) -> Plan:
    now = now or datetime.now(timezone.utc)
    ws = cfg.workshop
    plan = Plan(cfg.stack, ws.layout, len(active(attendees)), len(attendees) - len(active(attendees)), endpoints,
                hours=ws.hours)
    check_layout(plan, cfg)
    check_shapes(plan)
    check_limits(plan, cfg, source, offline_reason)
    check_letsencrypt(plan, cfg, le_issued)
    check_dns(plan, cfg)
    check_workshop_expiry(plan, cfg, now)
    check_cost(plan)
    return plan


def check_layout(plan: Plan, cfg: StackConfig) -> None:
    ws = cfg.workshop
    if not plan.attendees:
        plan.add("roster", FAIL, "no active attendees: every row is revoked; add attendees or clear a status")
        return
    plan.add("roster", PASS, f"{plan.attendees} active attendee(s), {plan.revoked} revoked ({ws.roster})")
    if ws.layout == "dedicated":
        plan.add("layout", PASS, f"dedicated: one VM per attendee, {plan.instances} VM(s), each with its own "
                 "hostname and key")
        return
    per = [len(p.attendees) for p in plan.endpoints]
    idle = ws.endpoints - len(plan.endpoints)
    detail = (f"shared: {len(plan.endpoints)} endpoint(s) for {plan.attendees} attendee(s), {min(per)}-{max(per)} "
              f"each, every attendee with an own key at {ws.attendee_rate}")
    if idle:
        plan.add("layout", WARN, f"{detail}; workshopEndpoints is {ws.endpoints}, so {idle} endpoint(s) would "
                 f"serve nobody and are not created (pulumi config set workshopEndpoints {len(plan.endpoints)})")
    else:
        plan.add("layout", PASS, detail)


def check_shapes(plan: Plan) -> None:
    by_shape: dict[str, list[EndpointPlan]] = {}
    shapes: dict[str, Shape] = {}
    for p in plan.endpoints:
        for shape in p.cfg.machine_shapes():  # a Ray cluster's head and each worker
            by_shape.setdefault(shape.name, []).append(p)
            shapes[shape.name] = shape
    for shape, members in sorted(by_shape.items()):
        s = shapes[shape]
        what = f"{len(members)} instance(s)"
        if s.is_gpu:
            what += f", {len(members) * s.gpus} {s.gpu_model} GPU(s) ({s.gpus} per instance)"
        else:
            what += f", {sum(p.cfg.shape_ocpus for p in members)} OCPUs, " \
                    f"{sum(p.cfg.shape_memory_gbs for p in members)} GB memory"
        models = sorted({p.cfg.model_name for p in members})
        if any(p.cfg.deployment.ray_cluster for p in members):
            what += " in a Ray cluster"
        plan.add(f"shape {shape}", PASS, f"{what}; model {', '.join(models)}")


def check_limits(plan: Plan, cfg: StackConfig, source: LimitsSource | None, offline_reason: str) -> None:
    wanted = needs(instance_shapes(plan.endpoints))
    if source is None:
        plan.add("limits", WARN, f"not checked ({offline_reason}); pass --limits FILE to check offline")
        return
    if not wanted:
        plan.add("limits", PASS, "no shape with a known service limit")
        return
    ads = source.availability_domains()
    ad = cfg.availability_domain or (ads[0] if ads else "")
    if not ad:
        plan.add("limits", FAIL, f"{source.description} names no availability domain; set availabilityDomain "
                 "(pulumi config set availabilityDomain <AD name>) or list the ADs in the limits file")
        return
    where = ad if cfg.availability_domain else f"{ad} (the region's first AD: availabilityDomain is empty)"
    for need in wanted:
        _check_need(plan, need, ad, where, ads, source)


def _check_need(plan: Plan, need: Need, ad: str, where: str, ads: list[str], source: LimitsSource) -> None:
    name = f"limit {need.limit}"
    got = source.availability(need.limit, ad)
    if got.available is None:
        plan.add(name, FAIL, f"need {need.describe()} in {where}; cannot tell what is available: {got.reason}")
        return
    if need.amount <= got.available:
        plan.add(name, PASS, f"need {need.describe()} in {where}; {got.available} available "
                 f"({got.available - need.amount} to spare)")
        return
    short = need.amount - got.available
    fixes = []
    others = []
    for other in ads:
        if other == ad:
            continue
        alt = source.availability(need.limit, other)
        if alt.available is not None:
            others.append(f"{other}: {alt.available}")
            if alt.available >= need.amount:
                fixes.append(f"pulumi config set availabilityDomain {other} ({alt.available} available there)")
    if need.unit == "GPUs" and plan.layout == "dedicated":
        per_gpu = max(1, need.amount // max(1, sum(need.instances.values())))
        fits = got.available // per_gpu
        if fits:
            fixes.append(f"workshopLayout shared with workshopEndpoints {min(fits, plan.attendees)} (attendees share "
                         "VMs, each with an own key)")
    fixes.append("request a limit increase (Console: Governance > Limits, Quotas and Usage)")
    elsewhere = f" (other ADs: {', '.join(others)})" if others else ""
    plan.add(name, FAIL, f"need {need.describe()} in {where}; only {got.available} available: short by {short} "
             f"{need.unit}{elsewhere}. Fix: " + "; or ".join(fixes))


@lru_cache(maxsize=2)
def _psl(path: Path) -> tuple[frozenset[str], frozenset[str], frozenset[str]] | None:
    """The Public Suffix List's rules, wildcard bases and exceptions, or None without the list."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    rules, wildcards, exceptions = set(), set(), set()
    for line in lines:
        rule = line.strip().split()[0].lower() if line.strip() else ""
        if not rule or rule.startswith("//"):
            continue
        if rule.startswith("!"):
            exceptions.add(rule[1:])
        elif rule.startswith("*."):
            wildcards.add(rule[2:])
        else:
            rules.add(rule)
    return frozenset(rules), frozenset(wildcards), frozenset(exceptions)


def registered_domain(name: str, psl_path: Path = PSL_PATH) -> tuple[str, bool]:
    """The registered domain Let's Encrypt counts certificates against (public suffix + one label), and
    whether the Public Suffix List said so (False: a guess from the last two labels)."""
    labels = name.lower().rstrip(".").split(".")
    psl = _psl(psl_path)
    if psl is None:
        return ".".join(labels[-2:]), False
    rules, wildcards, exceptions = psl
    suffix = 1  # the default rule "*": the last label is a public suffix
    for i in range(len(labels)):
        candidate = ".".join(labels[i:])
        if candidate in exceptions:
            suffix = len(labels) - i - 1
            break
        if candidate in rules or (i + 1 < len(labels) and ".".join(labels[i + 1:]) in wildcards):
            suffix = max(suffix, len(labels) - i)
    return ".".join(labels[-min(len(labels), suffix + 1):]), True


def check_letsencrypt(plan: Plan, cfg: StackConfig, le_issued: int) -> None:
    name = "Let's Encrypt budget"
    if cfg.tls.mode != "letsencrypt":
        plan.add(name, PASS, f"not used (tlsMode {cfg.tls.mode})")
        return
    ws = cfg.workshop
    if not ws.domain:
        if len(plan.endpoints) > 1:
            plan.add(name, FAIL, f"tlsMode letsencrypt needs a hostname per endpoint, and workshopDomain is empty "
                     f"({len(plan.endpoints)} endpoints would share '{cfg.domain}'): pulumi config set workshopDomain "
                     "ws.example.org (hostnames <attendee>.ws.example.org), or tlsMode self-signed")
            return
    directory = cfg.tls.acme_directory_url.rstrip("/")
    hosts = [p.cfg.domain for p in plan.endpoints]
    base = ws.domain or cfg.domain
    registered, exact = registered_domain(base)
    guess = "" if exact else " (a guess from the last two labels: Debian's publicsuffix list is not installed)"
    count = len(hosts) + le_issued
    already = f" plus {le_issued} already issued this week" if le_issued else ""
    if directory == LE_STAGING.rstrip("/"):
        status = PASS if count <= LE_STAGING_CERTS_PER_DOMAIN_WEEK else FAIL
        plan.add(name, status, f"{len(hosts)} certificate(s){already} from Let's Encrypt's staging directory "
                 f"(limit {LE_STAGING_CERTS_PER_DOMAIN_WEEK} per registered domain per week); staging certificates "
                 "are not trusted by browsers or clients: attendees need the staging roots")
        return
    if directory != LE_PRODUCTION.rstrip("/"):
        plan.add(name, WARN, f"{len(hosts)} certificate(s) from {directory}, not Let's Encrypt: check that CA's rate "
                 "limits yourself")
        return
    limit = LE_CERTS_PER_DOMAIN_WEEK
    left = limit - count
    dedicated = ws.layout == "dedicated"
    fixes = []
    if dedicated:
        fixes.append(f"workshopLayout shared (workshopEndpoints K needs K certificates, not {len(hosts)})")
    fixes.append(f"one wildcard certificate *.{base} by DNS-01 on OCI DNS (e.g. certbot with an OCI DNS plugin, "
                 "outside llmdeploy), then tlsMode provided with it as tlsCertificate/tlsPrivateKey on every endpoint")
    head = (f"{len(hosts)} new certificate(s) for {registered}{guess}{already}: {count} of {limit} per registered "
            f"domain per week")
    dup = (f"re-creating an endpoint re-issues the same certificate, at most {LE_DUPLICATES_PER_WEEK} times per "
           "week per hostname set")
    if count > limit:
        plan.add(name, FAIL, f"{head}: {count - limit} endpoint(s) would get no certificate. Fix: "
                 + "; or ".join(fixes))
    elif len(hosts) > left:
        plan.add(name, WARN, f"{head}; {left} left, so destroying and re-creating the workshop within 7 days (a "
                 f"rehearsal, a retry) would run out; {dup}. Consider: " + "; or ".join(fixes))
    else:
        plan.add(name, PASS, f"{head}; {left} left this week; {dup}")


def check_dns(plan: Plan, cfg: StackConfig) -> None:
    ws = cfg.workshop
    if not ws.domain:
        plan.add("DNS", PASS, "no workshopDomain: endpoints are reached by IP address (self-signed TLS)")
        return
    hosts = len(plan.endpoints)
    if not cfg.dns_zone:
        plan.add("DNS", WARN, f"dnsZone is empty: create {hosts} A record(s) under {ws.domain} yourself once the IPs "
                 "exist (or pulumi config set dnsZone <zone>)")
        return
    zone = cfg.dns_zone.lower().rstrip(".")
    if zone.startswith("ocid1."):
        plan.add("DNS", PASS, f"{hosts} A record(s) under {ws.domain} in zone {zone}")
    elif ws.domain == zone or ws.domain.endswith("." + zone):
        plan.add("DNS", PASS, f"{hosts} A record(s) under {ws.domain} in zone {zone}")
    else:
        plan.add("DNS", FAIL, f"workshopDomain {ws.domain} is not inside dnsZone {zone}: records for it cannot go "
                 f"in that zone; pulumi config set workshopDomain ws.{zone}")


def check_workshop_expiry(plan: Plan, cfg: StackConfig, now: datetime) -> None:
    if not cfg.expires_at:
        plan.add("expiresAt", WARN, "not set: `llmdeploy reap --expired` will never collect this workshop if its "
                 "stack is lost; pulumi config set expiresAt <end of the workshop, UTC>")
        return
    when = datetime.fromisoformat(cfg.expires_at.replace("Z", "+00:00"))
    end = now + timedelta(hours=cfg.workshop.hours)
    if when <= now:
        plan.add("expiresAt", FAIL, f"{cfg.expires_at} is in the past: `llmdeploy reap --expired` would delete the "
                 "workshop as soon as it exists; pulumi config set expiresAt <a later time>")
    elif when < end:
        plan.add("expiresAt", WARN, f"{cfg.expires_at} is before now + workshopHours ({cfg.workshop.hours} h, "
                 f"{end:%Y-%m-%dT%H:%MZ}): started now, the workshop would be reaped before its end")
    else:
        plan.add("expiresAt", PASS, f"{cfg.expires_at}: reap collects whatever is left after that")


def _money(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.4f}"


def check_cost(plan: Plan) -> None:
    by_shape: dict[str, list[float]] = {}
    unknown: set[str] = set()
    for shape, ocpus, memory in instance_shapes(plan.endpoints):
        price = hourly(shape, ocpus, memory)
        if price is None:
            unknown.add(shape)
            continue
        by_shape.setdefault(shape, []).append(price)
    for shape, prices in sorted(by_shape.items()):
        per_hour = sum(prices)
        cost = per_hour * plan.hours
        plan.total_cost += cost
        unit = f"{_money(prices[0])}/h" if len(set(prices)) == 1 else f"{_money(per_hour / len(prices))}/h on average"
        plan.add(f"cost {shape}", PASS, f"{len(prices)} x {unit} x {plan.hours} h = ${cost:,.2f}")
    for shape in sorted(unknown):
        plan.add(f"cost {shape}", WARN, "no price for this shape in llmdeploy.workshop.prices; add it")
    plan.add("cost total", PASS, f"${plan.total_cost:,.2f} for {plan.hours} h (list prices from {PRICE_SOURCE}, "
             f"recorded {PRICES_RECORDED}, not checked against the live list: verify; excludes boot volumes, IPs "
             "and egress)")
