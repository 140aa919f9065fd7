"""tlsrpt_check - checks an SMTP TLS report (RFC 8460) the way a receiver
would, for Postern's integration tests: a report the relay built is checked
against the RFC, not against the library that built it.

    import tlsrpt_check
    report = tlsrpt_check.load_gzip(body)   # application/tlsrpt+gzip bytes
    errors = tlsrpt_check.validate(report, strict=True)
    assert errors == [], errors

validate() applies tlsrpt_schema.json (beside this file; JSON Schema
2020-12, with Debian's python3-jsonschema) and then what a schema cannot
say:
  - start-datetime and end-datetime are real RFC 3339 date-times in UTC,
    and the start comes before the end;
  - counts are integers (JSON Schema takes 5.0 for one);
  - an "sts" policy names its MX patterns ("mx-host"), each one of the
    policy's own "mx:" lines; an "sts" or "tlsa" policy has its
    "policy-string"; "no-policy-found" has neither (there is no policy
    to encode);
  - IPv6 addresses are in their RFC 5952 text form;
  - strings hold no surrogates or noncharacters (I-JSON, RFC 7493 §2.1).
It returns a list of messages, each starting with the JSON path of what is
wrong ("policies[0].failure-details[1].result-type: ..."); [] when the
report is valid. strict=True also refuses members the RFC does not name
(the RFC allows them; Postern's own reports should have none, so a
misspelled optional member shows up).

load_gzip(data) and load_json(data) turn report bytes into the parsed
object, raising ReportError with a clear reason when the bytes are not gzip
(RFC 8460 §5.2; magic 1f 8b), not UTF-8, not JSON, not I-JSON (a repeated
member name, RFC 7493 §2.3), or not a JSON object.
"""

import copy
import datetime
import ipaddress
import json
import os
import re
import zlib

import jsonschema

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "tlsrpt_schema.json")

# Largest report accepted once decompressed (a gzip bomb stops here).
MAX_REPORT = 64 << 20


class ReportError(ValueError):
    """The bytes are not a report: not gzip, not UTF-8 JSON, not I-JSON."""


def _load_schema():
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def _strict(schema):
    """The schema with additionalProperties false on every object that
    lists its properties."""
    s = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if "properties" in node and node.get("type") == "object":
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(s)
    return s


SCHEMA = _load_schema()
_VALIDATORS = {
    False: jsonschema.Draft202012Validator(SCHEMA),
    True: jsonschema.Draft202012Validator(_strict(SCHEMA)),
}

_DATE_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|\+00:00)$")


def _path(parts):
    out = ""
    for p in parts:
        out += "[%d]" % p if isinstance(p, int) else ("." if out else "") + p
    return out or "(report)"


def _date_time(s):
    """An RFC 3339 §5.6 date-time in UTC as seconds since the epoch, or a
    reason why it is not one."""
    m = _DATE_TIME.match(s) if isinstance(s, str) else None
    if not m:
        return None, None  # the schema's pattern says so already
    y, mo, d, h, mi, sec = (int(x) for x in m.groups()[:6])
    frac = float(m.group(7) or 0)
    # RFC 3339 §5.7: a leap second is 60, and only at the end of a day in
    # UTC (23:59:60Z).
    leap = sec == 60 and h == 23 and mi == 59
    try:
        t = datetime.datetime(y, mo, d, h, mi, 59 if leap else sec,
                              tzinfo=datetime.timezone.utc)
    except ValueError as e:
        return None, "not a real date and time (%s)" % e
    return t.timestamp() + (1 if leap else 0) + frac, None


def _strings(node, path, errors):
    """I-JSON (RFC 7493 §2.1): no surrogates or noncharacters."""
    if isinstance(node, dict):
        for k, v in node.items():
            _strings(k, path + ["(member name)"], errors)
            _strings(v, path + [k], errors)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _strings(v, path + [i], errors)
    elif isinstance(node, str):
        for ch in node:
            c = ord(ch)
            if 0xD800 <= c <= 0xDFFF or 0xFDD0 <= c <= 0xFDEF or \
                    (c & 0xFFFE) == 0xFFFE:
                errors.append("%s: holds U+%04X, not allowed in I-JSON" %
                              (_path(path), c))
                break


def _counts(node, path, errors):
    """Counts are integers: 5.0 passes JSON Schema's "integer"."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k.endswith("-count") and isinstance(v, float):
                errors.append("%s: %r is not an integer count" %
                              (_path(path + [k]), v))
            else:
                _counts(v, path + [k], errors)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _counts(v, path + [i], errors)


def _ip(value, path, errors):
    if not isinstance(value, str) or ":" not in value:
        return  # IPv4, or not a string: the schema's business
    try:
        a = ipaddress.IPv6Address(value)
    except ValueError:
        errors.append("%s: %r is not an IPv6 address" % (_path(path), value))
        return
    forms = {str(a)}
    if a.ipv4_mapped is not None:
        forms.add("::ffff:%s" % a.ipv4_mapped)  # RFC 5952 §5
    if value not in forms:
        errors.append("%s: %r is not in RFC 5952 form (%s)" %
                      (_path(path), value, str(a)))


def _policy(p, path, errors):
    if not isinstance(p, dict):
        return
    kind = p.get("policy-type")
    strings = p.get("policy-string")
    mx = p.get("mx-host")
    if kind == "no-policy-found":
        # No policy was applied, so there is none to encode or take MX
        # patterns from (RFC 8460 §4: "if neither a DANE nor MTA-STS
        # Policy could be found").
        if "policy-string" in p:
            errors.append("%s: no-policy-found has no policy-string" %
                          _path(path + ["policy-string"]))
        if "mx-host" in p:
            errors.append("%s: no-policy-found has no mx-host" %
                          _path(path + ["mx-host"]))
    elif kind in ("sts", "tlsa"):
        if "policy-string" not in p:
            errors.append("%s: a %s policy needs its policy-string" %
                          (_path(path + ["policy-string"]), kind))
    if kind == "sts":
        if not mx:
            errors.append("%s: an sts policy needs its mx-host patterns" %
                          _path(path + ["mx-host"]))
        elif isinstance(mx, list) and isinstance(strings, list):
            # "The pattern of MX hostnames from the applied policy".
            lines = set()
            for s in strings:
                if isinstance(s, str) and ":" in s:
                    k, v = s.split(":", 1)
                    if k.strip() == "mx":
                        lines.add(v.strip().lower())
            for i, pat in enumerate(mx):
                if isinstance(pat, str) and pat.lower() not in lines:
                    errors.append("%s: %r is not an mx line of the policy" %
                                  (_path(path + ["mx-host", i]), pat))


def validate(obj, strict=False):
    """Checks a parsed report; returns a list of error strings, [] when it
    is valid (see the module docstring)."""
    errors = []
    v = _VALIDATORS[bool(strict)]
    for e in sorted(v.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        msg = e.message
        # A pattern says little to a reader: name the form instead.
        if e.validator in ("pattern", "anyOf") and \
                isinstance(e.schema, dict) and "description" in e.schema:
            msg = "%r is not %s" % (e.instance, e.schema["description"])
        errors.append("%s: %s" % (_path(list(e.absolute_path)), msg))
    if not isinstance(obj, dict):
        return errors
    _strings(obj, [], errors)
    _counts(obj, [], errors)

    dr = obj.get("date-range")
    if isinstance(dr, dict):
        times = {}
        for k in ("start-datetime", "end-datetime"):
            if k in dr:
                t, why = _date_time(dr[k])
                if why:
                    errors.append("%s: %r is %s" %
                                  (_path(["date-range", k]), dr[k], why))
                elif t is not None:
                    times[k] = t
        if len(times) == 2 and \
                not times["start-datetime"] < times["end-datetime"]:
            errors.append("date-range: start-datetime %r is not before "
                          "end-datetime %r" % (dr["start-datetime"],
                                               dr["end-datetime"]))

    policies = obj.get("policies")
    if isinstance(policies, list):
        for i, pr in enumerate(policies):
            if not isinstance(pr, dict):
                continue
            _policy(pr.get("policy"), ["policies", i, "policy"], errors)
            details = pr.get("failure-details")
            if not isinstance(details, list):
                continue
            for j, d in enumerate(details):
                if not isinstance(d, dict):
                    continue
                for k in ("sending-mta-ip", "receiving-ip"):
                    if k in d:
                        _ip(d[k], ["policies", i, "failure-details", j, k],
                            errors)
    return errors


def _no_duplicates(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise ReportError("not I-JSON: member %r appears twice "
                              "(RFC 7493 §2.3)" % k)
        seen[k] = v
    return seen


def load_json(data):
    """Parses application/tlsrpt+json bytes into the report object."""
    if not isinstance(data, (bytes, bytearray)):
        raise ReportError("not bytes: %s" % type(data).__name__)
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ReportError("not UTF-8 (RFC 7493 §2.1): %s" % e) from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except ReportError:
        raise
    except ValueError as e:
        raise ReportError("not JSON: %s" % e) from None
    if not isinstance(obj, dict):
        raise ReportError("not a JSON object but %s" % type(obj).__name__)
    return obj


def load_gzip(data):
    """Parses application/tlsrpt+gzip bytes (RFC 8460 §5.2) into the report
    object."""
    if not isinstance(data, (bytes, bytearray)):
        raise ReportError("not bytes: %s" % type(data).__name__)
    if bytes(data[:2]) != b"\x1f\x8b":
        raise ReportError("not gzip: starts with %r, not 1f 8b" %
                          bytes(data[:2]))
    out, rest = b"", bytes(data)
    try:
        # gzip allows several members one after the other: all of them
        # make the report.
        while rest:
            d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            out += d.decompress(rest, MAX_REPORT + 1 - len(out))
            if len(out) > MAX_REPORT:
                raise ReportError("gzip holds more than %d bytes" %
                                  MAX_REPORT)
            if not d.eof:
                raise ReportError("not gzip: truncated stream")
            rest = d.unused_data
    except zlib.error as e:
        raise ReportError("not gzip: %s" % e) from None
    return load_json(out)
