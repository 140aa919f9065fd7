#!/usr/bin/env bash
# BoringSSL and libcurl share the relay's process. libcurl built on OpenSSL
# binds its OpenSSL 3 references to BoringSSL's unversioned symbols and
# crashes (BUILD-NOTES.md); the GnuTLS flavour must never bind into
# BoringSSL's directory. This test runs the real binary with the dynamic
# loader's binding trace and fails on any such binding.
set -euo pipefail
bin=$1
android=/usr/lib/x86_64-linux-gnu/android

deps=$(ldd "$bin")
echo "$deps" | grep -q 'libcurl-gnutls.so.4' || { echo "FAIL: $bin does not link libcurl-gnutls"; exit 1; }
echo "$deps" | grep -q "$android/libssl.so" || { echo "FAIL: $bin does not link BoringSSL's libssl"; exit 1; }
# The OpenSSL flavour of libcurl (and with it OpenSSL's libssl) must never
# be linked. (OpenSSL 3's libcrypto does come in through libssh2, a
# dependency of libcurl-gnutls; curl is restricted to HTTPS so libssh2 is
# never used. Its bindings are reported below, not failed.)
if echo "$deps" | grep -qE 'libcurl\.so\.4|libssl\.so\.3'; then
  echo "FAIL: $bin links OpenSSL-based libcurl or libssl:"; echo "$deps"; exit 1
fi

trace=$(mktemp)
trap 'rm -f "$trace"' EXIT
# --version resolves every symbol at startup with LD_BIND_NOW.
LD_BIND_NOW=1 LD_DEBUG=bindings "$bin" --version 2>"$trace" >/dev/null
n=$(grep -c 'binding file' "$trace" || true)
[ "$n" -gt 100 ] || { echo "FAIL: the loader trace is empty ($n bindings)"; exit 1; }
bad=$(grep -E 'binding file [^ ]*(libcurl|libgnutls|libnettle|libhogweed)[^ ]* .*to '"$android"'/' "$trace" || true)
if [ -n "$bad" ]; then
  echo "FAIL: libcurl/GnuTLS bind into BoringSSL:"
  echo "$bad" | head -20
  exit 1
fi
ssl=$(grep -cE "to $android/lib(ssl|crypto)\.so" "$trace" || true)
other=$(grep -E "to $android/" "$trace" | awk '{print $4}' | sort | uniq -c |
  grep -vE "$android/|engine/postern" || true)
[ -n "$other" ] && printf 'note: other libraries binding into BoringSSL (not libcurl/GnuTLS):\n%s\n' "$other"

echo "ok: $n bindings traced, $ssl into BoringSSL, none from libcurl or GnuTLS"
