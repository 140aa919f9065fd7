/*
 * probe.c - postern-probe, the operator's diagnostic for Postern's policy
 * chain (like Postfix's posttls-finger).
 *
 *   postern-probe [-c CONFIG] [--json] [-v] DOMAIN
 *
 * runs the relay's MX loop against DOMAIN without sending mail (online.c);
 * exit 0 when mail would be delivered, 1 when deferred or bounced.
 *
 *   postern-probe --tlsa-verify --base-domain NAME --tlsa FILE --chain PEM
 *
 * checks a certificate chain against TLSA records offline with the relay's
 * own matcher (policy_dane_verify) and prints `ok depth=N` or the reason it
 * fails: exit 0 when a usable TLSA record authenticates the chain; 1 when
 * it does not (including when no record is usable).
 *
 * Both: 2 on usage errors and unreadable or malformed input files (--help
 * too).
 *
 * Single-threaded; everything is freed before exit so that the sanitizer
 * runs stay clean.
 */
#include <errno.h>
#include <stdbool.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "engine/config.h"
#include "policy/chain.h"
#include "tools/probe/online.h"

#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_USAGE 2

/* Longest TLSA file line we read: a full certificate in hex fits easily. */
#define LINE_MAX_BYTES (256 * 1024)
#define MAX_NAMES 8
#define MAX_CERTS 32

static const char usage_text[] =
    "usage: postern-probe [-c CONFIG] [--json] [-v] DOMAIN\n"
    "       postern-probe --tlsa-verify --base-domain NAME --tlsa FILE "
    "--chain PEM\n"
    "                     [--name NAME]... [--now SECONDS]\n"
    "       postern-probe --help\n"
    "\n"
    "  DOMAIN               run the relay's policy chain and MX loop against\n"
    "                       DOMAIN without sending mail: every MX, its MX\n"
    "                       level, addresses, DANE, the TLS level reached and\n"
    "                       the verdict; exit 0 if mail would be delivered\n"
    "  -c, --config FILE    the relay's configuration "
    "(default " CONFIG_DEFAULT_PATH ")\n"
    "  --json               print the result as one JSON object\n"
    "  -v, --verbose        log every step of the attempt to stderr\n"
    "  --tlsa-verify        check a certificate chain against TLSA records\n"
    "                       offline, with the relay's DANE matcher (RFC "
    "7672)\n"
    "  --base-domain NAME   TLSA base domain, a reference name for the\n"
    "                       certificate (DANE-TA records check names)\n"
    "  --name NAME          another reference name, e.g. the MX host name\n"
    "  --tlsa FILE          TLSA records, one per line: usage selector "
    "mtype hex\n"
    "                       ('#' comments and blank lines allowed)\n"
    "  --chain PEM          the server's certificates, leaf first\n"
    "  --now SECONDS        check validity at this Unix time (default: now)\n"
    "\n"
    "Prints 'ok depth=N' and exits 0 when a usable record authenticates the\n"
    "chain; prints 'fail: REASON: explanation' and exits 1 otherwise; exits "
    "2\n"
    "on usage errors and unreadable or malformed files.\n";

static int usage_error(const char *fmt, const char *arg) {
  fputs("postern-probe: ", stderr);
  fprintf(stderr, fmt, arg);
  fputs("\n\n", stderr);
  fputs(usage_text, stderr);
  return EXIT_USAGE;
}

/* ---- TLSA file --------------------------------------------------------- */

struct tlsa_set {
  struct policy_tlsa *recs;
  uint8_t **bufs;
  size_t n, cap;
};

static void tlsa_set_free(struct tlsa_set *s) {
  for (size_t i = 0; i < s->n; i++)
    free(s->bufs[i]);
  free(s->bufs);
  free(s->recs);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Parses a decimal 0..255 token. */
static int parse_u8(const char *tok, uint8_t *out) {
  size_t n = strlen(tok);
  if (n == 0 || n > 3)
    return -1;
  unsigned v = 0;
  for (size_t i = 0; i < n; i++) {
    if (tok[i] < '0' || tok[i] > '9')
      return -1;
    v = v * 10 + (unsigned)(tok[i] - '0');
  }
  if (v > 255)
    return -1;
  *out = (uint8_t)v;
  return 0;
}

/*
 * Parses one line "usage selector mtype hex..." (the hex may be split by
 * blanks, as in zone files). Returns 0 and appends a record, 1 for a blank
 * or comment line, or -1 with *err set.
 */
static int tlsa_line(struct tlsa_set *s, char *line, const char **err) {
  size_t line_len = strlen(line);
  char *hash = strchr(line, '#');
  if (hash != NULL)
    *hash = '\0';
  char *save = NULL;
  char *tok[3];
  for (int i = 0; i < 3; i++) {
    tok[i] = strtok_r(i == 0 ? line : NULL, " \t\r\n", &save);
    if (tok[i] == NULL) {
      if (i == 0)
        return 1;
      *err = "expected 'usage selector mtype hex'";
      return -1;
    }
  }
  struct policy_tlsa rec;
  if (parse_u8(tok[0], &rec.usage) != 0) {
    *err = "usage must be a number from 0 to 255";
    return -1;
  }
  if (parse_u8(tok[1], &rec.selector) != 0) {
    *err = "selector must be a number from 0 to 255";
    return -1;
  }
  if (parse_u8(tok[2], &rec.mtype) != 0) {
    *err = "matching type must be a number from 0 to 255";
    return -1;
  }
  size_t cap = line_len / 2 + 1;
  uint8_t *buf = malloc(cap);
  if (buf == NULL) {
    *err = "out of memory";
    return -1;
  }
  size_t len = 0;
  int half = -1;
  char *t;
  while ((t = strtok_r(NULL, " \t\r\n", &save)) != NULL) {
    for (; *t != '\0'; t++) {
      int v = hexval(*t);
      if (v < 0) {
        free(buf);
        *err = "association data must be hexadecimal";
        return -1;
      }
      if (half < 0) {
        half = v;
      } else {
        buf[len++] = (uint8_t)(half << 4 | v);
        half = -1;
      }
    }
  }
  if (half >= 0 || len == 0) {
    free(buf);
    *err = half >= 0 ? "odd number of hex digits"
                     : "expected 'usage selector mtype hex'";
    return -1;
  }
  if (s->n == s->cap) {
    size_t ncap = s->cap ? s->cap * 2 : 8;
    struct policy_tlsa *nr = realloc(s->recs, ncap * sizeof *nr);
    if (nr != NULL)
      s->recs = nr;
    uint8_t **nb = realloc(s->bufs, ncap * sizeof *nb);
    if (nb != NULL)
      s->bufs = nb;
    if (nr == NULL || nb == NULL) {
      free(buf);
      *err = "out of memory";
      return -1;
    }
    s->cap = ncap;
  }
  rec.data = buf;
  rec.len = len;
  s->recs[s->n] = rec;
  s->bufs[s->n] = buf;
  s->n++;
  return 0;
}

static int tlsa_read(const char *path, struct tlsa_set *s) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    fprintf(stderr, "postern-probe: %s: %s\n", path, strerror(errno));
    return -1;
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  unsigned long lineno = 0;
  int rc = 0;
  while ((n = getline(&line, &cap, f)) >= 0) {
    lineno++;
    const char *err = NULL;
    if ((size_t)n > LINE_MAX_BYTES) {
      err = "line too long";
    } else if (memchr(line, '\0', (size_t)n) != NULL) {
      err = "NUL byte in line";
    } else if (tlsa_line(s, line, &err) >= 0) {
      continue;
    }
    fprintf(stderr, "%s:%lu: %s\n", path, lineno, err);
    rc = -1;
    break;
  }
  if (rc == 0 && ferror(f)) {
    fprintf(stderr, "postern-probe: %s: read error\n", path);
    rc = -1;
  }
  free(line);
  fclose(f);
  return rc;
}

/* ---- PEM chain --------------------------------------------------------- */

struct chain {
  struct policy_dane_cert certs[MAX_CERTS];
  uint8_t *ders[MAX_CERTS];
  size_t n;
};

static void chain_free(struct chain *c) {
  for (size_t i = 0; i < c->n; i++)
    OPENSSL_free(c->ders[i]);
}

static int chain_read(const char *path, struct chain *c) {
  BIO *bio = BIO_new_file(path, "r");
  if (bio == NULL) {
    fprintf(stderr, "postern-probe: %s: %s\n", path, strerror(errno));
    ERR_clear_error();
    return -1;
  }
  int rc = 0;
  for (;;) {
    X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (x == NULL) {
      /* The end of the file shows as "no start line"; anything else is a
       * damaged certificate. */
      uint32_t e = ERR_peek_last_error();
      if (!(ERR_GET_LIB(e) == ERR_LIB_PEM &&
            ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
        fprintf(stderr, "postern-probe: %s: certificate %zu is malformed\n",
                path, c->n + 1);
        rc = -1;
      }
      break;
    }
    if (c->n == MAX_CERTS) {
      fprintf(stderr, "postern-probe: %s: more than %d certificates\n", path,
              MAX_CERTS);
      X509_free(x);
      rc = -1;
      break;
    }
    uint8_t *der = NULL;
    int len = i2d_X509(x, &der);
    X509_free(x);
    if (len <= 0) {
      fprintf(stderr, "postern-probe: %s: cannot encode certificate\n", path);
      rc = -1;
      break;
    }
    c->ders[c->n] = der;
    c->certs[c->n].der = der;
    c->certs[c->n].len = (size_t)len;
    c->n++;
  }
  ERR_clear_error();
  BIO_free(bio);
  if (rc == 0 && c->n == 0) {
    fprintf(stderr, "postern-probe: %s: no certificates\n", path);
    rc = -1;
  }
  return rc;
}

/* ---- main -------------------------------------------------------------- */

static int parse_now(const char *s, time_t *out) {
  char *end = NULL;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < 0)
    return -1;
  *out = (time_t)v;
  return 0;
}

int main(int argc, char **argv) {
  enum {
    OPT_TLSA_VERIFY = 1,
    OPT_BASE,
    OPT_NAME,
    OPT_TLSA,
    OPT_CHAIN,
    OPT_NOW,
    OPT_HELP,
    OPT_JSON,
  };
  static const struct option opts[] = {
      {"tlsa-verify", no_argument, NULL, OPT_TLSA_VERIFY},
      {"base-domain", required_argument, NULL, OPT_BASE},
      {"name", required_argument, NULL, OPT_NAME},
      {"tlsa", required_argument, NULL, OPT_TLSA},
      {"chain", required_argument, NULL, OPT_CHAIN},
      {"now", required_argument, NULL, OPT_NOW},
      {"help", no_argument, NULL, OPT_HELP},
      {"config", required_argument, NULL, 'c'},
      {"json", no_argument, NULL, OPT_JSON},
      {"verbose", no_argument, NULL, 'v'},
      {NULL, 0, NULL, 0},
  };
  int verify = 0;
  const char *base = NULL, *tlsa_path = NULL, *chain_path = NULL;
  const char *names[MAX_NAMES];
  size_t nnames = 0;
  time_t now = time(NULL);
  const char *config = CONFIG_DEFAULT_PATH;
  bool json = false, verbose = false, online_opts = false;

  opterr = 0;
  int o;
  while ((o = getopt_long(argc, argv, "hc:v", opts, NULL)) != -1) {
    switch (o) {
    case 'c':
      config = optarg;
      online_opts = true;
      break;
    case OPT_JSON:
      json = true;
      online_opts = true;
      break;
    case 'v':
      verbose = true;
      online_opts = true;
      break;
    case OPT_TLSA_VERIFY:
      verify = 1;
      break;
    case OPT_BASE:
      base = optarg;
      break;
    case OPT_NAME:
      if (nnames + 1 >= MAX_NAMES)
        return usage_error("too many --name options%s", "");
      names[1 + nnames++] = optarg;
      break;
    case OPT_TLSA:
      tlsa_path = optarg;
      break;
    case OPT_CHAIN:
      chain_path = optarg;
      break;
    case OPT_NOW:
      if (parse_now(optarg, &now) != 0)
        return usage_error("--now needs a Unix time in seconds, not '%s'",
                           optarg);
      break;
    case 'h':
    case OPT_HELP:
      fputs(usage_text, stdout);
      return EXIT_USAGE;
    default:
      return usage_error("unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  if (!verify) {
    if (optind + 1 != argc)
      return usage_error("give one DOMAIN, or --tlsa-verify%s", "");
    return probe_online(config, argv[optind], json, verbose);
  }
  if (online_opts)
    return usage_error("-c, --json and -v go with DOMAIN, not --tlsa-verify%s",
                       "");
  if (optind < argc)
    return usage_error("unexpected argument '%s'", argv[optind]);
  if (base == NULL || tlsa_path == NULL || chain_path == NULL)
    return usage_error("--tlsa-verify needs --base-domain, --tlsa and "
                       "--chain%s",
                       "");
  if (base[0] == '\0')
    return usage_error("--base-domain must not be empty%s", "");
  names[0] = base;

  struct tlsa_set set = {NULL, NULL, 0, 0};
  struct chain chain;
  chain.n = 0;
  int ex = EXIT_USAGE;
  if (tlsa_read(tlsa_path, &set) != 0 || chain_read(chain_path, &chain) != 0)
    goto out;

  struct policy_dane_result res;
  int rc = policy_dane_verify(set.recs, set.n, chain.certs, chain.n, names,
                              nnames + 1, now, &res);
  if (rc != 0) {
    fprintf(stderr, "postern-probe: %s: the leaf certificate is unusable\n",
            chain_path);
    goto out;
  }
  if (res.status == POLICY_DANE_OK) {
    printf("ok depth=%d\n", res.depth);
    ex = EXIT_OK;
  } else {
    printf("fail: %s: %s\n", policy_dane_status_name(res.status),
           policy_dane_status_message(res.status));
    ex = EXIT_FAIL;
  }
out:
  tlsa_set_free(&set);
  chain_free(&chain);
  return ex;
}
