"""A local stand-in for the OCI APIs the workshop commands call, answering with their documented request and
response shapes, after checking each request's OCI signature as OCI does (oci_server.verify_request).

Why: no OCI endpoint is reachable here, and teardown, reap and the limits check must be proven against a server
that refuses what OCI refuses. One plain-HTTP server on a loopback port serves every path (the SDK clients are
pointed at it with service_endpoint):

- Search, POST /20180409/resources (SearchResources): a StructuredSearchDetails body {"type": "Structured",
  "query": ..., "matchingContextType": ...}; answers a ResourceSummaryCollection {"items": [ResourceSummary]}
  (resourceType, identifier, compartmentId, displayName, availabilityDomain, lifecycleState, timeCreated,
  freeformTags, definedTags, systemTags), `limit` per page and the opc-next-page header. The query language is
  interpreted for the subset llmdeploy writes: `query all resources where` terms joined by `&&`, each either
  `(freeformTags.key = 'K' && freeformTags.value = 'V')` (one tag with that key and value) or
  `lifecycleState|compartmentId|displayName =|!= 'V'`. Anything else is 400 InvalidParameter, so a query the
  stand-in does not understand fails loudly rather than matching everything. Search is eventually
  consistent on OCI: `search_lag` makes deleted resources still appear, in their old state, for that many
  searches.
- Limits, GET /20190729/services/{service}/limits/{limit}/resourceAvailability?compartmentId&availabilityDomain
  (GetResourceAvailability): {"used", "available", "fractionalUsage", "fractionalAvailability",
  "effectiveQuotaValue"}; 404 NotAuthorizedOrNotFound for an unknown limit, 400 InvalidParameter when an
  AD-scoped limit is asked without availabilityDomain.
- Identity, GET /20160918/availabilityDomains?compartmentId (ListAvailabilityDomains): [{name, id, compartmentId}].
- Compute, GET /20160918/instances/{id} (GetInstance) and DELETE /20160918/instances/{id}?preserveBootVolume
  (TerminateInstance, 204): the instance goes TERMINATING, then TERMINATED after `terminate_polls` GETs.
- Networking, DELETE /20160918/{publicIps|networkSecurityGroups|subnets|routeTables|securityLists|
  internetGateways|vcns}/{id} (204): 409 Conflict while a live resource still uses it (a VCN with subnets, a
  subnet with a running instance), as OCI refuses it.
- Test control (not OCI, unsigned): GET /_test/destroy?stack=S marks every resource of stack S that is `in_state`
  deleted, which is what `pulumi destroy` does; the fake pulumi CLI calls it.

Errors are OCI's: {"code", "message"} with an opc-request-id header. The server runs in a thread of the test
process and is shut down when the with-block ends.
"""
from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .oci_server import NOT_AUTHENTICATED, ApiKey, SignatureError, verify_request
from .stubserver import running

NETWORK_PATHS = {"publicIps": "PublicIp", "networkSecurityGroups": "NetworkSecurityGroup", "subnets": "Subnet",
                 "routeTables": "RouteTable", "securityLists": "SecurityList", "internetGateways": "InternetGateway",
                 "vcns": "Vcn"}
GONE = {"Instance": "TERMINATED"}  # every other type ends DELETED
_PAIR = re.compile(r"^\(\s*freeformTags\.key\s*=\s*'([^']*)'\s*&&\s*freeformTags\.value\s*=\s*'([^']*)'\s*\)$", re.I)
_ATTR = re.compile(r"^(lifecycleState|compartmentId|displayName)\s*(!=|=)\s*'([^']*)'$", re.I)


@dataclass
class Resource:
    kind: str
    id: str
    name: str
    compartment: str
    tags: dict[str, str]
    state: str = "AVAILABLE"
    uses: tuple[str, ...] = ()  # ids this resource depends on (its VCN, subnet, ...)
    in_state: bool = True  # known to Pulumi's state (pulumi destroy deletes it)
    ad: str | None = None
    stale: tuple[str, int] | None = None  # (state Search still shows, until this many searches)
    terminate_polls_left: int = 0

    def summary(self, state: str) -> dict[str, Any]:
        return {"resourceType": self.kind, "identifier": self.id, "compartmentId": self.compartment,
                "timeCreated": "2026-11-20T08:00:00.000Z", "displayName": self.name, "availabilityDomain": self.ad,
                "lifecycleState": state, "freeformTags": dict(self.tags), "definedTags": {}, "systemTags": {},
                "searchContext": None, "identityContext": {}}


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    status: int = 0
    verdict: str = ""


@dataclass
class OciApi:
    url: str
    keys: dict[str, bytes]
    tenancy: str
    resources: dict[str, Resource] = field(default_factory=dict)
    limits: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # (limit, AD) -> (available, used)
    ads: list[str] = field(default_factory=list)
    page_size: int = 0  # 0: as many as the client asks for
    search_lag: int = 0
    terminate_polls: int = 1
    seen: list[Seen] = field(default_factory=list)
    searches: int = 0
    queries: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, name: str, compartment: str, tags: dict[str, str], **kw: Any) -> Resource:
        prefix = {"Instance": "instance", "PublicIp": "publicip", "Vcn": "vcn", "Subnet": "subnet",
                  "RouteTable": "routetable", "SecurityList": "securitylist", "InternetGateway": "internetgateway",
                  "NetworkSecurityGroup": "networksecuritygroup"}.get(kind, kind.lower())
        resource = Resource(kind, f"ocid1.{prefix}.oc1.eu-frankfurt-1.{uuid.uuid4().hex[:20]}", name, compartment,
                            dict(tags), **kw)
        self.resources[resource.id] = resource
        return resource

    def by_kind(self, kind: str) -> list[Resource]:
        return [r for r in self.resources.values() if r.kind == kind]

    def gone(self, resource: Resource) -> None:
        if self.search_lag:
            resource.stale = (resource.state, self.searches + self.search_lag)
        resource.state = GONE.get(resource.kind, "DELETED")

    def signed(self, method: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and not s.path.startswith("/_test/")]


class QueryError(ValueError):
    pass


def parse_query(query: str) -> list[tuple[str, str, str]]:
    """(attribute, operator, value) terms; ("tag", key, value) for a freeform tag pair."""
    match = re.match(r"^\s*query\s+all\s+resources(?:\s+where\s+(.*))?$", query, re.I | re.S)
    if not match:
        raise QueryError(f"Unsupported query (this stand-in knows 'query all resources where ...'): {query!r}")
    text = (match.group(1) or "").strip()
    terms: list[tuple[str, str, str]] = []
    while text:
        if text.startswith("("):
            depth, end = 0, -1
            for i, ch in enumerate(text):
                depth += ch == "("
                depth -= ch == ")"
                if depth == 0:
                    end = i
                    break
            if end < 0:
                raise QueryError("unbalanced parentheses")
            term, text = text[:end + 1], text[end + 1:]
            pair = _PAIR.match(term)
            if not pair:
                raise QueryError(f"unsupported condition {term!r}")
            terms.append(("tag", pair.group(1), pair.group(2)))
        else:
            part, _, rest = text.partition("&&")
            attr = _ATTR.match(part.strip())
            if not attr:
                raise QueryError(f"unsupported condition {part.strip()!r}")
            terms.append((attr.group(1).lower(), attr.group(2), attr.group(3)))
            text = "&&" + rest if rest else ""
        text = text.strip()
        if text.startswith("&&"):
            text = text[2:].strip()
            if not text:
                raise QueryError("query ends with &&")
        elif text:
            raise QueryError(f"expected && before {text[:30]!r}")
    return terms


def matches(terms: list[tuple[str, str, str]], resource: Resource, state: str) -> bool:
    for attr, op, value in terms:
        if attr == "tag":
            ok = resource.tags.get(op) == value
        else:
            actual = {"lifecyclestate": state, "compartmentid": resource.compartment, "displayname": resource.name}[attr]
            equal = actual.lower() == value.lower() if attr == "lifecyclestate" else actual == value
            ok = equal if op == "=" else not equal
        if not ok:
            return False
    return True


def _handler(api: OciApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("opc-request-id", uuid.uuid4().hex.upper())
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, seen: Seen, status: int, code: str, message: str) -> None:
            seen.status = status
            self._send(status, {"code": code, "message": message})

        def _handle(self, method: str) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = urlsplit(self.path)
            seen = Seen(method, parts.path, parse_qs(parts.query), body)
            with api.lock:
                api.seen.append(seen)
            if parts.path.startswith("/_test/"):
                return self._test_control(seen)
            try:
                seen.verdict = verify_request(method, self.path, dict(self.headers.items()), body, api.keys)
            except SignatureError as exc:
                seen.verdict = str(exc)
                return self._error(seen, 401, "NotAuthenticated", NOT_AUTHENTICATED)
            with api.lock:
                self._route(seen, method, parts.path, body)

        def _route(self, seen: Seen, method: str, path: str, body: bytes) -> None:
            q = {k: v[0] for k, v in seen.query.items()}
            if method == "POST" and path == "/20180409/resources":
                return self._search(seen, body, q)
            m = re.fullmatch(r"/20190729/services/([^/]+)/limits/([^/]+)/resourceAvailability", path)
            if method == "GET" and m:
                return self._availability(seen, m.group(1), m.group(2), q)
            if method == "GET" and path == "/20160918/availabilityDomains":
                if q.get("compartmentId") != api.tenancy:
                    return self._error(seen, 404, "NotAuthorizedOrNotFound", "Authorization failed or requested "
                                       "resource not found.")
                seen.status = 200
                return self._send(200, [{"name": ad, "id": f"ocid1.availabilitydomain.oc1..{i}",
                                         "compartmentId": api.tenancy} for i, ad in enumerate(api.ads)])
            m = re.fullmatch(r"/20160918/instances/([^/]+)", path)
            if m:
                return self._instance(seen, method, m.group(1), q)
            m = re.fullmatch(r"/20160918/([A-Za-z]+)/([^/]+)", path)
            if method == "DELETE" and m and m.group(1) in NETWORK_PATHS:
                return self._delete(seen, NETWORK_PATHS[m.group(1)], m.group(2))
            self._error(seen, 404, "NotAuthorizedOrNotFound", f"no such operation {method} {path}")

        def _search(self, seen: Seen, body: bytes, q: dict[str, str]) -> None:
            try:
                details = json.loads(body)
            except json.JSONDecodeError:
                return self._error(seen, 400, "InvalidParameter", "body is not JSON")
            if details.get("type") != "Structured" or not isinstance(details.get("query"), str):
                return self._error(seen, 400, "InvalidParameter", "expected StructuredSearchDetails "
                                   "{type: Structured, query: ...}")
            try:
                terms = parse_query(details["query"])
            except QueryError as exc:
                return self._error(seen, 400, "InvalidParameter", str(exc))
            api.queries.append(details["query"])
            api.searches += 1
            hits = []
            for resource in api.resources.values():
                state = resource.state
                if resource.stale and api.searches <= resource.stale[1]:
                    state = resource.stale[0]
                if matches(terms, resource, state):
                    hits.append(resource.summary(state))
            start = int(q.get("page") or 0)
            size = int(q.get("limit") or 0) or api.page_size or len(hits) or 1
            if api.page_size:
                size = min(size, api.page_size)
            page = hits[start:start + size]
            headers = {"opc-next-page": str(start + size)} if start + size < len(hits) else {}
            seen.status = 200
            self._send(200, {"items": page}, headers)

        def _availability(self, seen: Seen, service: str, limit: str, q: dict[str, str]) -> None:
            if service != "compute" or not any(k[0] == limit for k in api.limits):
                return self._error(seen, 404, "NotAuthorizedOrNotFound", f"Limit {limit} not found for {service}")
            if not q.get("compartmentId"):
                return self._error(seen, 400, "MissingParameter", "compartmentId is required")
            ad = q.get("availabilityDomain")
            if not ad:
                return self._error(seen, 400, "InvalidParameter", "availabilityDomain is required for limits "
                                   "scoped to an availability domain")
            if (limit, ad) not in api.limits:
                return self._error(seen, 400, "InvalidParameter", f"unknown availability domain {ad}")
            available, used = api.limits[(limit, ad)]
            seen.status = 200
            self._send(200, {"used": used, "available": available, "fractionalUsage": None,
                             "fractionalAvailability": None, "effectiveQuotaValue": None})

        def _instance(self, seen: Seen, method: str, instance_id: str, q: dict[str, str]) -> None:
            resource = api.resources.get(instance_id)
            if resource is None or resource.kind != "Instance":
                return self._error(seen, 404, "NotAuthorizedOrNotFound", "Authorization failed or requested "
                                   "resource not found.")
            if method == "GET":
                if resource.state == "TERMINATING":
                    if resource.terminate_polls_left <= 0:
                        resource.state = "TERMINATED"
                    resource.terminate_polls_left -= 1
                seen.status = 200
                return self._send(200, {"id": resource.id, "compartmentId": resource.compartment,
                                        "availabilityDomain": resource.ad or "Uocm:EU-FRANKFURT-1-AD-1",
                                        "displayName": resource.name, "lifecycleState": resource.state,
                                        "region": "eu-frankfurt-1", "shape": "VM.GPU.A10.1",
                                        "timeCreated": "2026-11-20T08:00:00.000Z", "freeformTags": resource.tags},
                                  {"etag": uuid.uuid4().hex})
            if method == "DELETE":
                if q.get("preserveBootVolume", "false") != "false":
                    return self._error(seen, 400, "InvalidParameter", "this stand-in expects preserveBootVolume=false")
                if resource.state in ("TERMINATED", "TERMINATING"):
                    return self._error(seen, 409, "IncorrectState", f"instance is {resource.state}")
                if api.search_lag:
                    resource.stale = (resource.state, api.searches + api.search_lag)
                resource.state = "TERMINATING"
                resource.terminate_polls_left = api.terminate_polls
                seen.status = 204
                return self._send(204)
            self._error(seen, 405, "NotAllowed", f"{method} is not allowed here")

        def _delete(self, seen: Seen, kind: str, resource_id: str) -> None:
            resource = api.resources.get(resource_id)
            if resource is None or resource.kind != kind or resource.state == "DELETED":
                return self._error(seen, 404, "NotAuthorizedOrNotFound", "Authorization failed or requested "
                                   "resource not found.")
            users = [r for r in api.resources.values() if resource_id in r.uses and r.state not in
                     ("TERMINATED", "DELETED")]
            if users:
                return self._error(seen, 409, "Conflict", f"The {kind} {resource_id} still has dependent resources "
                                   f"({', '.join(sorted({u.kind for u in users}))})")
            api.gone(resource)
            seen.status = 204
            self._send(204)

        def _test_control(self, seen: Seen) -> None:
            q = {k: v[0] for k, v in seen.query.items()}
            if seen.path == "/_test/destroy":
                with api.lock:
                    for resource in api.resources.values():
                        if resource.in_state and resource.tags.get("stack") == q.get("stack"):
                            api.gone(resource)
                seen.status = 200
                return self._send(200, {"destroyed": q.get("stack")})
            self._error(seen, 404, "NotFound", "unknown test control")

        def do_GET(self) -> None:  # noqa: N802
            self._handle("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._handle("POST")

        def do_DELETE(self) -> None:  # noqa: N802
            self._handle("DELETE")

    return Handler


@contextmanager
def oci_api(keys: list[ApiKey], ads: tuple[str, ...] = ("Uocm:EU-FRANKFURT-1-AD-1", "Uocm:EU-FRANKFURT-1-AD-2",
                                                       "Uocm:EU-FRANKFURT-1-AD-3")) -> Iterator[OciApi]:
    """Serve on a free loopback port until the with-block ends; point LLMDEPLOY_OCI_ENDPOINT at `api.url`."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    httpd.daemon_threads = True
    api = OciApi(url=f"http://127.0.0.1:{httpd.server_address[1]}", keys={k.key_id: k.public_pem for k in keys},
                 tenancy=keys[0].tenancy, ads=list(ads))
    httpd.RequestHandlerClass = _handler(api)
    with running(httpd):
        yield api
