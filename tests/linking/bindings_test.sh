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
if echo "$deps" | grep -qE 'libcurl\.so\.4|libssl\.so\.3|libcrypto\.so\.3'; then
  echo "FAIL: $bin links an OpenSSL-based library:"; echo "$deps"; exit 1
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
echo "ok: $n bindings traced, $ssl into BoringSSL, none from libcurl or GnuTLS"
