/*
 * mtasts_cache_fill - writes synthetic MTA-STS cache records, for tests of
 * the tools that read the cache (qtool stats).
 *
 *   mtasts_cache_fill STATE_DIR COUNT [MAP_SIZE_BYTES]
 *
 * Creates <STATE_DIR>/mtasts if needed and stores COUNT enforce policies
 * for fill<N>.example, valid for a year from now. Exits 0, or 1 with the
 * error on standard error.
 */
#include "policy/mtasts_cache.h"
#include "base/postern_err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv) {
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: mtasts_cache_fill STATE_DIR COUNT [MAP_SIZE]\n");
    return 2;
  }
  long n = strtol(argv[2], NULL, 10);
  unsigned long long map = argc == 4 ? strtoull(argv[3], NULL, 10) : 0;
  struct policy_mtasts_cache *c;
  int rc = policy_mtasts_cache_open(argv[1], map, &c);
  if (rc != 0) {
    fprintf(stderr, "mtasts_cache_fill: open: %s\n", postern_strerror(rc));
    return 1;
  }
  struct policy_mtasts_rec *r = calloc(1, sizeof *r);
  if (r == NULL)
    return 1;
  uint64_t now = (uint64_t)time(NULL);
  r->fetched = r->last_used = now;
  r->expires = now + POLICY_MTASTS_MAX_AGE_MAX;
  r->policy.mode = POLICY_MTASTS_MODE_ENFORCE;
  r->policy.max_age = POLICY_MTASTS_MAX_AGE_MAX;
  r->policy.n_mx = 1;
  snprintf(r->policy.mx[0], sizeof r->policy.mx[0], "*.example.net");
  for (long i = 0; i < n && rc == 0; i++) {
    char dom[64];
    snprintf(dom, sizeof dom, "fill%ld.example", i);
    snprintf(r->id, sizeof r->id, "%ld", i + 1);
    rc = policy_mtasts_cache_put(c, dom, r, now);
  }
  free(r);
  policy_mtasts_cache_release(c);
  if (rc != 0) {
    fprintf(stderr, "mtasts_cache_fill: put: %s\n", postern_strerror(rc));
    return 1;
  }
  return 0;
}
