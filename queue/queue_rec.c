/*
 * queue_rec.c - message ids and the binary envelope record.
 *
 * Ids: 48 bits of Unix ms and 80 random bits, Crockford base32 (ULID layout).
 * One process-wide mutex keeps ids strictly increasing: within one ms (or if
 * the clock steps back) the previous random part is incremented instead of
 * drawn again, so two ids of one process never collide and still sort by
 * creation. Across processes and machines, 80 random bits make collisions
 * negligible (birthday bound ~2^40 ids in the same millisecond).
 *
 * Records: every decoded envelope is one malloc'ed block (struct, recipient
 * array, then NUL-terminated strings), so queue_env_free is one free().
 */
#include "queue/internal.h"

#include "base/postern_err.h"

#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static pthread_mutex_t id_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t id_last_ms;
static unsigned char id_last_rand[10];

static void fill_random(void *buf, size_t n) {
  unsigned char *p = buf;
  while (n > 0) {
    ssize_t r = getrandom(p, n, 0);
    if (r < 0)
      abort(); /* no kernel randomness: nothing sane left to do */
    p += r;
    n -= (size_t)r;
  }
}

/*
 * The random part of a new millisecond's first id. Ids must be unique, not
 * secret, so the kernel's randomness seeds a splitmix64 stream once per
 * process instead of one getrandom(2) per millisecond on the hot path.
 * Called with id_mu held.
 */
static uint64_t id_stream;
static bool id_seeded;

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void id_random(unsigned char r[10]) {
  if (!id_seeded) {
    fill_random(&id_stream, sizeof id_stream);
    id_seeded = true;
  }
  uint64_t a = splitmix64(&id_stream), b = splitmix64(&id_stream);
  memcpy(r, &a, 8);
  memcpy(r + 8, &b, 2);
}

/* Adds one to the 80-bit big-endian number; returns 1 on overflow. */
static int rand_increment(unsigned char r[10]) {
  for (int i = 9; i >= 0; i--) {
    if (++r[i] != 0)
      return 0;
  }
  return 1;
}

void queue_id_new(char out[QUEUE_ID_LEN + 1]) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
  unsigned char raw[16];

  pthread_mutex_lock(&id_mu);
  if (ms <= id_last_ms && id_last_ms != 0) {
    ms = id_last_ms;
    if (rand_increment(id_last_rand)) {
      ms++;
      id_random(id_last_rand);
    }
  } else {
    id_random(id_last_rand);
  }
  id_last_ms = ms;
  for (int i = 0; i < 6; i++)
    raw[i] = (unsigned char)(ms >> (8 * (5 - i)));
  memcpy(raw + 6, id_last_rand, 10);
  pthread_mutex_unlock(&id_mu);

  /* 128 bits as 26 five-bit groups, two leading zero bits. */
  for (int i = 0; i < QUEUE_ID_LEN; i++) {
    int bit = i * 5 - 2; /* position of the group's first bit */
    unsigned v = 0;
    for (int b = 0; b < 5; b++, bit++) {
      v <<= 1;
      if (bit >= 0)
        v |= (raw[bit / 8] >> (7 - bit % 8)) & 1u;
    }
    out[i] = crockford[v];
  }
  out[QUEUE_ID_LEN] = '\0';
}

static int b32_value(char c) {
  const char *p = c ? strchr(crockford, c) : NULL;
  return p ? (int)(p - crockford) : -1;
}

bool queue_id_valid(const char *s) {
  if (!s || strlen(s) != QUEUE_ID_LEN)
    return false;
  for (int i = 0; i < QUEUE_ID_LEN; i++) {
    if (b32_value(s[i]) < 0)
      return false;
  }
  return b32_value(s[0]) <= 7; /* the two leading bits are zero */
}

uint64_t queue_id_time_ms(const char *id) {
  uint64_t v = 0;
  for (int i = 0; i < 10; i++) /* 10 groups = 50 bits, top 2 are zero */
    v = (v << 5) | (uint64_t)b32_value(id[i]);
  return v;
}

size_t queue__domain_of(const char *addr, char dst[QUEUE_DOMAIN_MAX + 1]) {
  const char *at = strrchr(addr, '@');
  const char *d = at ? at + 1 : "";
  if (*d == '\0')
    d = "(none)";
  size_t n = 0;
  for (; d[n] && n < QUEUE_DOMAIN_MAX; n++)
    dst[n] = (char)tolower((unsigned char)d[n]);
  dst[n] = '\0';
  return n;
}

/* ---- Record codec ------------------------------------------------------- */

#define REC_MAGIC 0x31455150u /* "PQE1" */

struct rec_hdr {
  uint32_t magic;
  uint8_t state, ret, flags, pad;
  uint32_t n_rcpts;
  uint32_t pad2;
  uint64_t arrival_ms, next_ms, size;
};

struct rec_rcpt {
  uint8_t state, notify;
  uint16_t pad;
  uint32_t attempts;
  uint64_t next_ms, last_ms;
};

#define REC_FLAG_WARNED 1u
#define REC_FLAG_TLS_REPORT 2u
/* RFC 8689 REQUIRETLS. Records written before it have the bit clear, so
 * they read as false. */
#define REC_FLAG_REQUIRETLS 4u
/* An SMTP AUTH user follows the recipients (one more string). Records
 * written before it, and those of messages submitted without a login,
 * have the bit clear and end after the recipients: they read as "". */
#define REC_FLAG_AUTH_USER 8u

static size_t slen(const char *s) {
  return s ? strlen(s) : 0;
}

static size_t reply_len(const char *s) {
  size_t n = slen(s);
  return n > QUEUE_REPLY_MAX ? QUEUE_REPLY_MAX : n;
}

static size_t status_len(const char *s) {
  size_t n = slen(s);
  return n > QUEUE_STATUS_MAX ? QUEUE_STATUS_MAX : n;
}

size_t queue__rec_size(const struct queue_env *e) {
  size_t n = sizeof(struct rec_hdr) + 4 * 4 + slen(e->sender) + slen(e->envid) +
             slen(e->client_addr) + slen(e->client_helo);
  for (size_t i = 0; i < e->n_rcpts; i++) {
    const struct queue_rcpt *r = &e->rcpts[i];
    n += sizeof(struct rec_rcpt) + 4 * 4 + slen(r->addr) + slen(r->orcpt) +
         status_len(r->status) + reply_len(r->reply);
  }
  if (slen(e->auth_user) > 0)
    n += 4 + slen(e->auth_user);
  return n;
}

static unsigned char *put_str(unsigned char *p, const char *s, size_t n) {
  uint32_t l = (uint32_t)n;
  memcpy(p, &l, 4);
  if (n)
    memcpy(p + 4, s, n);
  return p + 4 + n;
}

void queue__rec_write(const struct queue_env *e, unsigned char *dst) {
  struct rec_hdr h = {0};
  h.magic = REC_MAGIC;
  h.state = (uint8_t)e->state;
  h.ret = (uint8_t)e->ret;
  h.flags = (uint8_t)((e->delay_warned ? REC_FLAG_WARNED : 0) |
                      (e->tls_report ? REC_FLAG_TLS_REPORT : 0) |
                      (e->requiretls ? REC_FLAG_REQUIRETLS : 0) |
                      (slen(e->auth_user) > 0 ? REC_FLAG_AUTH_USER : 0));
  h.n_rcpts = (uint32_t)e->n_rcpts;
  h.arrival_ms = e->arrival_ms;
  h.next_ms = e->next_ms;
  h.size = e->size;
  memcpy(dst, &h, sizeof h);
  unsigned char *p = dst + sizeof h;
  p = put_str(p, e->sender, slen(e->sender));
  p = put_str(p, e->envid, slen(e->envid));
  p = put_str(p, e->client_addr, slen(e->client_addr));
  p = put_str(p, e->client_helo, slen(e->client_helo));
  for (size_t i = 0; i < e->n_rcpts; i++) {
    const struct queue_rcpt *r = &e->rcpts[i];
    struct rec_rcpt rr = {0};
    rr.state = (uint8_t)r->state;
    rr.notify = (uint8_t)r->notify;
    rr.attempts = r->attempts;
    rr.next_ms = r->next_ms;
    rr.last_ms = r->last_ms;
    memcpy(p, &rr, sizeof rr);
    p += sizeof rr;
    p = put_str(p, r->addr, slen(r->addr));
    p = put_str(p, r->orcpt, slen(r->orcpt));
    p = put_str(p, r->status, status_len(r->status));
    p = put_str(p, r->reply, reply_len(r->reply));
  }
  if (slen(e->auth_user) > 0)
    put_str(p, e->auth_user, slen(e->auth_user));
}

struct reader {
  const unsigned char *p, *end;
  char *out; /* string area of the decoded block */
};

static int get_str(struct reader *rd, const char **dst) {
  uint32_t l;
  if ((size_t)(rd->end - rd->p) < 4)
    return POSTERN_EQCORRUPT;
  memcpy(&l, rd->p, 4);
  rd->p += 4;
  if ((size_t)(rd->end - rd->p) < l)
    return POSTERN_EQCORRUPT;
  memcpy(rd->out, rd->p, l);
  rd->out[l] = '\0';
  *dst = rd->out;
  rd->out += l + 1;
  rd->p += l;
  return 0;
}

int queue__rec_decode(const void *data, size_t len, const char *id,
                      struct queue_env **out) {
  struct rec_hdr h;
  if (len < sizeof h)
    return POSTERN_EQCORRUPT;
  memcpy(&h, data, sizeof h);
  if (h.magic != REC_MAGIC || h.state > QUEUE_MSG_HELD ||
      h.ret > QUEUE_RET_HDRS)
    return POSTERN_EQCORRUPT;
  /* Each recipient takes at least its fixed part and four lengths. */
  if (h.n_rcpts > (len - sizeof h) / (sizeof(struct rec_rcpt) + 16))
    return POSTERN_EQCORRUPT;
  /* The strings take at most the record's bytes plus one NUL each. */
  size_t total = sizeof(struct queue_env) +
                 h.n_rcpts * sizeof(struct queue_rcpt) + len + 5 +
                 4 * (size_t)h.n_rcpts;
  struct queue_env *e = calloc(1, total);
  if (!e)
    return POSTERN_ENOMEM;
  e->rcpts = (struct queue_rcpt *)(e + 1);
  struct reader rd = {(const unsigned char *)data + sizeof h,
                      (const unsigned char *)data + len,
                      (char *)(e->rcpts + h.n_rcpts)};
  memcpy(e->id, id, QUEUE_ID_LEN);
  e->id[QUEUE_ID_LEN] = '\0';
  e->state = (enum queue_msg_state)h.state;
  e->ret = (enum queue_ret)h.ret;
  e->delay_warned = (h.flags & REC_FLAG_WARNED) != 0;
  e->tls_report = (h.flags & REC_FLAG_TLS_REPORT) != 0;
  e->requiretls = (h.flags & REC_FLAG_REQUIRETLS) != 0;
  e->arrival_ms = h.arrival_ms;
  e->next_ms = h.next_ms;
  e->size = h.size;
  e->n_rcpts = h.n_rcpts;
  int rc = 0;
  if ((rc = get_str(&rd, &e->sender)) || (rc = get_str(&rd, &e->envid)) ||
      (rc = get_str(&rd, &e->client_addr)) ||
      (rc = get_str(&rd, &e->client_helo)))
    goto fail;
  for (size_t i = 0; i < h.n_rcpts; i++) {
    struct queue_rcpt *r = &e->rcpts[i];
    struct rec_rcpt rr;
    if ((size_t)(rd.end - rd.p) < sizeof rr) {
      rc = POSTERN_EQCORRUPT;
      goto fail;
    }
    memcpy(&rr, rd.p, sizeof rr);
    rd.p += sizeof rr;
    if (rr.state > QUEUE_RCPT_BOUNCED) {
      rc = POSTERN_EQCORRUPT;
      goto fail;
    }
    r->state = (enum queue_rcpt_state)rr.state;
    r->notify = rr.notify;
    r->attempts = rr.attempts;
    r->next_ms = rr.next_ms;
    r->last_ms = rr.last_ms;
    if ((rc = get_str(&rd, &r->addr)) || (rc = get_str(&rd, &r->orcpt)) ||
        (rc = get_str(&rd, &r->status)) || (rc = get_str(&rd, &r->reply)))
      goto fail;
  }
  e->auth_user = "";
  if ((h.flags & REC_FLAG_AUTH_USER) && (rc = get_str(&rd, &e->auth_user)))
    goto fail;
  if (rd.p != rd.end) {
    rc = POSTERN_EQCORRUPT;
    goto fail;
  }
  *out = e;
  return 0;
fail:
  free(e);
  return rc;
}

void queue_env_free(struct queue_env *env) {
  free(env);
}

static const char *const rcpt_state_names[] = {
#define QUEUE__RSN(name, str) str,
    QUEUE_RCPT_STATE_MAP(QUEUE__RSN)
#undef QUEUE__RSN
};

static const char *const msg_state_names[] = {
#define QUEUE__MSN(name, str) str,
    QUEUE_MSG_STATE_MAP(QUEUE__MSN)
#undef QUEUE__MSN
};

const char *queue_rcpt_state_name(enum queue_rcpt_state s) {
  if ((unsigned)s < sizeof rcpt_state_names / sizeof *rcpt_state_names)
    return rcpt_state_names[s];
  return "unknown";
}

const char *queue_msg_state_name(enum queue_msg_state s) {
  if ((unsigned)s < sizeof msg_state_names / sizeof *msg_state_names)
    return msg_state_names[s];
  return "unknown";
}

int queue_msg_state_parse(const char *s, enum queue_msg_state *out) {
  for (unsigned i = 0; i < sizeof msg_state_names / sizeof *msg_state_names;
       i++) {
    if (strcmp(s, msg_state_names[i]) == 0) {
      *out = (enum queue_msg_state)i;
      return 0;
    }
  }
  return POSTERN_EINVAL;
}

uint64_t queue_retry_next(const struct queue_retry_params *p, unsigned attempts,
                          uint64_t now_ms, uint32_t rnd) {
  double delay = (double)p->initial;
  for (unsigned i = 1; i < attempts && delay < (double)p->max; i++)
    delay *= p->factor;
  if (delay > (double)p->max)
    delay = (double)p->max;
  uint64_t d = (uint64_t)delay;
  /* Jitter in steps of 1/10000 of the delay, from -1000 to +1000. */
  int64_t step = (int64_t)(rnd % 2001u) - 1000;
  int64_t j = (int64_t)d * step / 10000; /* d < 2^53: no overflow */
  return now_ms + (uint64_t)((int64_t)d + j);
}
