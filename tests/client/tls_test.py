"""Runs the cmocka TLS tests (argv[1]) with certificates made by pki.py.

tls_test.c needs a CA, a server certificate for mx.test, one for
cnonly.test that names it only in the subject CN (no subjectAltName), and a
second, unrelated CA with a key of its own; they are passed in the
environment.
"""

import os
import subprocess
import sys

import pki

with pki.PKI() as p, pki.PKI(ca_name="Unrelated Test CA") as other:
    crt, key = p.server_cert("mx.test")
    cn_crt, cn_key = p.server_cert("cnonly.test", san=False)
    _, other_key = other.server_cert("mx.test")
    env = dict(os.environ, TLS_TEST_CA=p.ca_file, TLS_TEST_CERT=crt,
               TLS_TEST_KEY=key, TLS_TEST_OTHER_CA=other.ca_file,
               TLS_TEST_OTHER_KEY=other_key, TLS_TEST_CN_ONLY_CERT=cn_crt,
               TLS_TEST_CN_ONLY_KEY=cn_key)
    print("running %s with a test PKI in %s" % (sys.argv[1], p.dir))
    rc = subprocess.run([os.path.abspath(sys.argv[1])], env=env,
                        timeout=120).returncode
    print("tls_test exit status %d" % rc)
    sys.exit(1 if rc != 0 else 0)
