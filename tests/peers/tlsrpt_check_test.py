"""Self-test of tlsrpt_check.py and tlsrpt_schema.json (the RFC 8460 report
check that integration tests apply to reports Postern sends).

The example report of RFC 8460 (Appendix B) passes once adjusted where the
example breaks the RFC's own rules, and the unadjusted example fails on
exactly those points; broken variants each fail with a message naming what
is wrong; valid variants (no-policy-found, tlsa, a leap second, an unknown
member outside strict mode) pass; and the byte loaders refuse what is not
gzip, not UTF-8, not JSON or not I-JSON.
"""

import copy
import gzip
import json
import sys

import tlsrpt_check

failures = []


def check(what, cond, detail=""):
    print("%s: %s%s" % ("ok" if cond else "FAIL", what,
                         (" (%s)" % detail) if not cond and detail else ""))
    if not cond:
        failures.append(what)


# RFC 8460 Appendix B, as printed, but for what the example itself gets
# wrong against the RFC's text (marked ADJUSTED):
#  - "mx-host" is a string; section 4.4 says a JSON array of strings
#    (erratum 6241);
#  - "2001:db8:abcd:0012::1" and "...:0013::1" keep leading zeros, which
#    RFC 5952 (named by section 4.4 for IPv6) forbids (section 4.1);
#  - "additional-information" is a URI broken over lines with spaces
#    ("https://reports.company-x.example/ report_info ? id = ..."), not a
#    URI (RFC 3986).
RFC_EXAMPLE = """{
  "organization-name": "Company-X",
  "date-range": {
    "start-datetime": "2016-04-01T00:00:00Z",
    "end-datetime": "2016-04-01T23:59:59Z"
  },
  "contact-info": "sts-reporting@company-x.example",
  "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
  "policies": [{
    "policy": {
      "policy-type": "sts",
      "policy-string": ["version: STSv1","mode: testing",
            "mx: *.mail.company-y.example","max_age: 86400"],
      "policy-domain": "company-y.example",
      "mx-host": ["*.mail.company-y.example"]
    },
    "summary": {
      "total-successful-session-count": 5326,
      "total-failure-session-count": 303
    },
    "failure-details": [{
      "result-type": "certificate-expired",
      "sending-mta-ip": "2001:db8:abcd:12::1",
      "receiving-mx-hostname": "mx1.mail.company-y.example",
      "failed-session-count": 100
    }, {
      "result-type": "starttls-not-supported",
      "sending-mta-ip": "2001:db8:abcd:13::1",
      "receiving-mx-hostname": "mx2.mail.company-y.example",
      "receiving-ip": "203.0.113.56",
      "failed-session-count": 200,
      "additional-information": "https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported"
    }, {
      "result-type": "validation-failure",
      "sending-mta-ip": "198.51.100.62",
      "receiving-ip": "203.0.113.58",
      "receiving-mx-hostname": "mx-backup.mail.company-y.example",
      "failed-session-count": 3,
      "failure-reason-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"
    }]
  }]
}"""

EXAMPLE = json.loads(RFC_EXAMPLE)


def variant(change):
    r = copy.deepcopy(EXAMPLE)
    change(r)
    return r


def pol(r):
    return r["policies"][0]["policy"]


def fd(r, i=0):
    return r["policies"][0]["failure-details"][i]

def summary(r):
    return r["policies"][0]["summary"]


def dates(r):
    return r["date-range"]


# (what, how to break the example, what one message must say)
BROKEN = [
    ("missing organization-name", lambda r: r.pop("organization-name"),
     ["'organization-name' is a required property"]),
    ("missing report-id", lambda r: r.pop("report-id"),
     ["'report-id' is a required property"]),
    ("missing end-datetime", lambda r: dates(r).pop("end-datetime"),
     ["date-range", "'end-datetime' is a required property"]),
    ("missing total-failure-session-count",
     lambda r: summary(r).pop("total-failure-session-count"),
     ["policies[0].summary",
      "'total-failure-session-count' is a required property"]),
    ("missing failed-session-count",
     lambda r: fd(r, 2).pop("failed-session-count"),
     ["policies[0].failure-details[2]",
      "'failed-session-count' is a required property"]),
    ("negotiation failure without receiving-mx-hostname",
     lambda r: fd(r, 0).pop("receiving-mx-hostname"),
     ["policies[0].failure-details[0]",
      "'receiving-mx-hostname' is a required property"]),
    ("organization-name a number",
     lambda r: r.update({"organization-name": 42}),
     ["organization-name:", "not of type 'string'"]),
    ("policies a single object, not an array",
     lambda r: r.update({"policies": r["policies"][0]}),
     ["policies:", "not of type 'array'"]),
    ("empty policies", lambda r: r.update({"policies": []}),
     ["policies:", "too short"]),
    ("count as a string",
     lambda r: fd(r, 1).update({"failed-session-count": "200"}),
     ["failure-details[1].failed-session-count", "not of type 'integer'"]),
    ("count as 5.0",
     lambda r: summary(r).update({"total-successful-session-count": 5326.0}),
     ["summary.total-successful-session-count", "not an integer"]),
    ("negative count",
     lambda r: summary(r).update({"total-failure-session-count": -1}),
     ["summary.total-failure-session-count", "less than the minimum"]),
    ("unknown result-type",
     lambda r: fd(r, 0).update({"result-type": "certificate-revoked"}),
     ["failure-details[0].result-type", "'certificate-revoked'"]),
    ("unknown policy-type", lambda r: pol(r).update({"policy-type": "dane"}),
     ["policy.policy-type", "'dane'"]),
    ("date that does not exist",
     lambda r: dates(r).update({"start-datetime": "2016-02-30T00:00:00Z"}),
     ["date-range.start-datetime", "not a real date"]),
    ("date-time without a time zone",
     lambda r: dates(r).update({"start-datetime": "2016-04-01T00:00:00"}),
     ["date-range.start-datetime", "UTC"]),
    ("date-time not in UTC",
     lambda r: dates(r).update({"end-datetime": "2016-04-01T23:59:59+02:00"}),
     ["date-range.end-datetime", "UTC"]),
    ("a date, not a date-time",
     lambda r: dates(r).update({"end-datetime": "2016-04-01"}),
     ["date-range.end-datetime", "not an RFC 3339 date-time"]),
    ("start after end",
     lambda r: dates(r).update({"start-datetime": "2016-04-02T00:00:00Z"}),
     ["date-range", "not before"]),
    ("start equal to end",
     lambda r: dates(r).update({"end-datetime": "2016-04-01T00:00:00Z"}),
     ["date-range", "not before"]),
    ("sts policy without mx-host", lambda r: pol(r).pop("mx-host"),
     ["policy.mx-host", "sts policy needs its mx-host"]),
    ("sts policy without policy-string",
     lambda r: pol(r).pop("policy-string"),
     ["policy.policy-string", "needs its policy-string"]),
    ("sts mx-host not from the policy",
     lambda r: pol(r).update({"mx-host": ["mx.elsewhere.example"]}),
     ["policy.mx-host[0]", "not an mx line"]),
    ("no-policy-found with a policy-string",
     lambda r: pol(r).update({"policy-type": "no-policy-found"}),
     ["policy.policy-string", "no-policy-found has no policy-string"]),
    ("IPv6 not in RFC 5952 form",
     lambda r: fd(r, 0).update({"sending-mta-ip": "2001:DB8:0:0:0:0:0:1"}),
     ["failure-details[0].sending-mta-ip", "RFC 5952"]),
    ("IPv4 octet over 255",
     lambda r: fd(r, 2).update({"receiving-ip": "203.0.113.256"}),
     ["failure-details[2].receiving-ip", "not an IPv4 or IPv6 address"]),
    ("policy-domain in U-labels",
     lambda r: pol(r).update({"policy-domain": "b\u00fccher.example"}),
     ["policy.policy-domain", "not a host name in A-labels"]),
    ("contact-info not an address",
     lambda r: r.update({"contact-info": "Company X security"}),
     ["contact-info:", "not an e-mail address"]),
    ("lone surrogate in a string",
     lambda r: r.update({"organization-name": "Company-\ud800X"}),
     ["organization-name", "I-JSON"]),
]


def fails_naming(what, report, *needles, strict=False):
    """The report is invalid, and one message holds every needle."""
    errs = tlsrpt_check.validate(report, strict=strict)
    check("%s: invalid, the message names it" % what,
          any(all(n in e for n in needles) for e in errs),
          "want %r in one of %r" % (needles, errs))


def passes(what, report, strict=False):
    errs = tlsrpt_check.validate(report, strict=strict)
    check("%s: valid" % what, errs == [], errs)


def main():
    # --- The RFC's example.
    passes("RFC 8460 example (adjusted)", EXAMPLE)
    passes("RFC 8460 example (adjusted), strict", EXAMPLE, strict=True)
    original = variant(lambda r: (
        pol(r).__setitem__("mx-host", "*.mail.company-y.example"),
        fd(r, 0).__setitem__("sending-mta-ip", "2001:db8:abcd:0012::1"),
        fd(r, 1).__setitem__("sending-mta-ip", "2001:db8:abcd:0013::1"),
        fd(r, 1).__setitem__(
            "additional-information",
            "https://reports.company-x.example/\n"
            "        report_info ? id = 5065427c-23d3#StarttlsNotSupported ")))
    errs = tlsrpt_check.validate(original)
    where = sorted({e.split(":", 1)[0] for e in errs})
    check("RFC 8460 example as printed fails on exactly the adjusted points",
          where == ["policies[0].failure-details[0].sending-mta-ip",
                    "policies[0].failure-details[1].additional-information",
                    "policies[0].failure-details[1].sending-mta-ip",
                    "policies[0].policy.mx-host"], errs)

    # --- Broken variants.
    for what, change, needles in BROKEN:
        fails_naming(what, variant(change), *needles)

    # --- Unknown members: allowed (RFC 7493 §4.2), refused when strict.
    extra = variant(lambda r: r.__setitem__("x-vendor-note", "hello"))
    passes("unknown top-level member", extra)
    fails_naming("unknown top-level member, strict", extra, "x-vendor-note",
                 strict=True)
    typo = variant(lambda r: fd(r, 2).__setitem__("failure-reason",
                                                  "misspelled"))
    fails_naming("misspelled optional member, strict", typo,
                 "failure-details[2]", "failure-reason", strict=True)

    # --- Valid variants.
    passes("no-policy-found without policy-string or failures",
           variant(lambda r: r["policies"].__setitem__(0, {
               "policy": {"policy-type": "no-policy-found",
                          "policy-domain": "company-y.example"},
               "summary": {"total-successful-session-count": 12,
                           "total-failure-session-count": 0}})),
           strict=True)
    passes("tlsa policy with a policy failure and no MX",
           variant(lambda r: r["policies"].append({
               "policy": {"policy-type": "tlsa",
                          "policy-string": [
                              "3 1 1 0C72AC70B745AC19998811B131D662C9AC69DBDB"
                              "E7CB23E5B514B56664C5D3D6"],
                          "policy-domain": "company-y.example",
                          "mx-host": ["mx1.mail.company-y.example"]},
               "summary": {"total-successful-session-count": 0,
                           "total-failure-session-count": 4},
               "failure-details": [{"result-type": "dnssec-invalid",
                                    "failed-session-count": 4}]})),
           strict=True)
    passes("leap second at the end of the day, +00:00",
           variant(lambda r: r["date-range"].update({
               "end-datetime": "2016-12-31T23:59:60+00:00",
               "start-datetime": "2016-12-31T00:00:00.000Z"})))

    # --- Bytes.
    data = gzip.compress(RFC_EXAMPLE.encode(), mtime=0)
    r = tlsrpt_check.load_gzip(data)
    check("gzip round trip gives the report", r == EXAMPLE and
          tlsrpt_check.validate(r) == [])
    r = tlsrpt_check.load_json(RFC_EXAMPLE.encode())
    check("plain JSON gives the report", r == EXAMPLE)
    for what, blob, needle in (
            ("plain JSON where gzip is due", RFC_EXAMPLE.encode(),
             "not gzip"),
            ("empty bytes", b"", "not gzip"),
            ("truncated gzip", data[:len(data) // 2], "truncated"),
            ("corrupt gzip", data[:10] + b"\x00" * 20 + data[30:], "not gzip"),
            ("gzip of text", gzip.compress(b"not json"), "not JSON"),
            ("gzip of Latin-1", gzip.compress(
                '{"organization-name": "caf\u00e9"}'.encode("latin-1")),
             "not UTF-8"),
            ("gzip of an array", gzip.compress(b"[1, 2]"),
             "not a JSON object"),
            ("repeated member name", gzip.compress(
                b'{"report-id": "a", "report-id": "b"}'), "appears twice")):
        try:
            tlsrpt_check.load_gzip(blob)
            check("%s: refused" % what, False, "loaded")
        except tlsrpt_check.ReportError as e:
            check("%s: refused, %r" % (what, needle), needle in str(e),
                  str(e))

    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
