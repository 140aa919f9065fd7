/*
 * mtasts_cache.c - the persistent MTA-STS policy cache (see mtasts_cache.h
 * for the record format and the contract).
 *
 * Invariants: no transaction outlives a call; the `#tick` key is the only
 * non-domain key and is never handed to callers or counted as an entry; a
 * record that does not decode is treated as absent everywhere and removed
 * by the next sweep.
 *
 * Space: a map that is completely full cannot even delete (every change
 * copies pages), so a record for a new domain is refused while the pages
 * in use leave less than HEADROOM free; replacing or updating a domain's
 * record may use the headroom. When a write finds the map full, expired
 * records are deleted, one more small commit (the tick) makes their pages
 * reusable - LMDB reuses a page freed by transaction N only from
 * transaction N+2 on - and the write is tried again; if the map is still
 * full the write is refused and counted (full_events), so the operator can
 * see it (metrics, qtool stats) and raise mtasts { cache_size }.
 *
 * Ownership: handles are refcounted and shared by every open of the same
 * directory in the process (LMDB forbids a second open); the last release
 * closes the environment.
 */
#include "policy/mtasts_cache.h"

#include "base/postern_err.h"
#include "base/postern_lmdb.h"

#include <errno.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Records looked at per write transaction of a sweep: bounds how long one
 * sweep holds LMDB's writer lock (deliveries may want to write). */
#define SWEEP_CHUNK 512
#define HDR_LEN 40
#define TICK_KEY "#tick"
/* Pages kept free for deletes and updates: a tenth of the map, at least 64
 * (one sweep chunk copies about 20). */
#define HEADROOM(pages) ((pages) / 10 > 64 ? (pages) / 10 : 64)
/* LMDB's free-page database (FREE_DBI in mdb.c; mdb_stat -f reads it so). */
#define FREE_DBI 0

struct policy_mtasts_cache {
  char path[PATH_MAX];
  MDB_env *env;
  MDB_dbi dbi;
  int refs; /* guarded by registry_mu */
  _Atomic uint64_t full_events;
  struct policy_mtasts_cache *next;
};

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct policy_mtasts_cache *registry;

/* ---- records ---- */

static void put_u32(uint8_t *p, uint32_t v) {
  memcpy(p, &v, sizeof v);
}
static void put_u64(uint8_t *p, uint64_t v) {
  memcpy(p, &v, sizeof v);
}
static uint32_t get_u32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, sizeof v);
  return v;
}
static uint64_t get_u64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

size_t policy_mtasts_rec_encode(const struct policy_mtasts_rec *rec,
                                uint8_t *buf, size_t cap) {
  size_t idlen = strnlen(rec->id, sizeof rec->id);
  if (idlen == 0 || idlen > POLICY_MTASTS_ID_MAX ||
      rec->policy.n_mx > POLICY_MTASTS_MX_MAX ||
      (unsigned)rec->policy.mode >= POLICY_MTASTS_MODE_COUNT || cap < HDR_LEN)
    return 0;
  buf[0] = POLICY_MTASTS_REC_FORMAT;
  buf[1] = (uint8_t)rec->policy.mode;
  buf[2] = (uint8_t)idlen;
  buf[3] = (uint8_t)rec->policy.n_mx;
  put_u32(buf + 4, rec->policy.max_age);
  put_u64(buf + 8, rec->fetched);
  put_u64(buf + 16, rec->expires);
  put_u64(buf + 24, rec->last_used);
  put_u64(buf + 32, rec->tried);
  size_t len = HDR_LEN;
  if (cap - len < idlen)
    return 0;
  memcpy(buf + len, rec->id, idlen);
  len += idlen;
  for (size_t i = 0; i < rec->policy.n_mx; i++) {
    size_t n = strnlen(rec->policy.mx[i], POLICY_MTASTS_MX_LEN);
    if (n == 0 || n > 255 || cap - len < 1 + n)
      return 0;
    buf[len++] = (uint8_t)n;
    memcpy(buf + len, rec->policy.mx[i], n);
    len += n;
  }
  return len;
}

static bool id_char(uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9');
}

int policy_mtasts_rec_decode(const void *data, size_t len,
                             struct policy_mtasts_rec *out) {
  const uint8_t *p = data;
  if (len < 1 || p[0] != POLICY_MTASTS_REC_FORMAT)
    return POSTERN_ENOENT;
  if (len < HDR_LEN)
    return POSTERN_EPROTO;
  size_t idlen = p[2], nmx = p[3];
  if (p[1] >= POLICY_MTASTS_MODE_COUNT || idlen == 0 ||
      idlen > POLICY_MTASTS_ID_MAX || nmx > POLICY_MTASTS_MX_MAX ||
      len - HDR_LEN < idlen)
    return POSTERN_EPROTO;
  out->policy.mode = (enum policy_mtasts_mode)p[1];
  out->policy.max_age = get_u32(p + 4);
  out->fetched = get_u64(p + 8);
  out->expires = get_u64(p + 16);
  out->last_used = get_u64(p + 24);
  out->tried = get_u64(p + 32);
  size_t off = HDR_LEN;
  for (size_t i = 0; i < idlen; i++)
    if (!id_char(p[off + i]))
      return POSTERN_EPROTO;
  memcpy(out->id, p + off, idlen);
  out->id[idlen] = '\0';
  off += idlen;
  out->policy.n_mx = nmx;
  for (size_t i = 0; i < nmx; i++) {
    if (off >= len)
      return POSTERN_EPROTO;
    size_t n = p[off++];
    if (n == 0 || len - off < n || memchr(p + off, '\0', n) != NULL)
      return POSTERN_EPROTO;
    memcpy(out->policy.mx[i], p + off, n);
    out->policy.mx[i][n] = '\0';
    off += n;
  }
  return off == len ? 0 : POSTERN_EPROTO;
}

/* ---- the environment ---- */

static int env_open(const char *path, uint64_t map_size, unsigned flags,
                    MDB_env **envp, MDB_dbi *dbip) {
  MDB_env *env;
  if (mdb_env_create(&env) != 0)
    return POSTERN_ENOMEM;
  int rc = POSTERN_EIO;
  MDB_txn *txn = NULL;
  if (!(flags & MDB_RDONLY) &&
      (rc = postern_lmdb_reserve_lock(path, POSTERN_LMDB_LOCK_RESERVE)) != 0) {
    mdb_env_close(env);
    return rc;
  }
  rc = POSTERN_EIO;
  /* MDB_NOTLS: read transactions are not tied to threads (every worker
   * thread reads). MDB_NOMETASYNC: one fsync per commit; a crash may undo
   * the last commit, never the file's integrity - a cache can afford it. */
  if ((map_size && mdb_env_set_mapsize(env, (size_t)map_size) != 0) ||
      mdb_env_open(env, path, flags | MDB_NOTLS | MDB_NOMETASYNC, 0600) != 0 ||
      mdb_txn_begin(env, NULL, flags & MDB_RDONLY, &txn) != 0 ||
      mdb_dbi_open(txn, NULL, 0, dbip) != 0 || mdb_txn_commit(txn) != 0) {
    if (txn)
      mdb_txn_abort(txn);
    mdb_env_close(env);
    return rc;
  }
  *envp = env;
  return 0;
}

int policy_mtasts_cache_open(const char *state_dir, uint64_t map_size,
                             struct policy_mtasts_cache **out) {
  char path[PATH_MAX];
  int n = snprintf(path, sizeof path, "%s/mtasts", state_dir);
  if (n < 0 || (size_t)n >= sizeof path)
    return POSTERN_EINVAL;
  if (mkdir(path, 0700) != 0 && errno != EEXIST)
    return POSTERN_EIO;
  if (map_size == 0)
    map_size = POLICY_MTASTS_CACHE_SIZE_DEFAULT;
  pthread_mutex_lock(&registry_mu);
  for (struct policy_mtasts_cache *c = registry; c; c = c->next)
    if (strcmp(c->path, path) == 0) {
      c->refs++;
      *out = c;
      pthread_mutex_unlock(&registry_mu);
      return 0;
    }
  int rc = POSTERN_ENOMEM;
  struct policy_mtasts_cache *c = calloc(1, sizeof *c);
  if (c != NULL) {
    snprintf(c->path, sizeof c->path, "%s", path);
    rc = env_open(path, map_size, 0, &c->env, &c->dbi);
  }
  if (rc == 0) {
    c->refs = 1;
    c->next = registry;
    registry = c;
    *out = c;
  } else {
    free(c);
  }
  pthread_mutex_unlock(&registry_mu);
  return rc;
}

void policy_mtasts_cache_retain(struct policy_mtasts_cache *c) {
  pthread_mutex_lock(&registry_mu);
  c->refs++;
  pthread_mutex_unlock(&registry_mu);
}

void policy_mtasts_cache_release(struct policy_mtasts_cache *c) {
  if (c == NULL)
    return;
  pthread_mutex_lock(&registry_mu);
  if (--c->refs == 0) {
    for (struct policy_mtasts_cache **pp = &registry; *pp; pp = &(*pp)->next)
      if (*pp == c) {
        *pp = c->next;
        break;
      }
    mdb_env_close(c->env);
    free(c);
  }
  pthread_mutex_unlock(&registry_mu);
}

static MDB_val key_of(const char *domain) {
  return (MDB_val){.mv_size = strlen(domain), .mv_data = (void *)domain};
}

static bool is_domain_key(const MDB_val *k) {
  return k->mv_size > 0 && ((const char *)k->mv_data)[0] != '#';
}

int policy_mtasts_cache_get(struct policy_mtasts_cache *c, const char *domain,
                            struct policy_mtasts_rec *rec) {
  MDB_txn *txn;
  if (domain[0] == '\0' || domain[0] == '#')
    return POSTERN_ENOENT;
  if (mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn) != 0)
    return POSTERN_EIO;
  MDB_val k = key_of(domain), v;
  int rc = mdb_get(txn, c->dbi, &k, &v);
  int ret = POSTERN_ENOENT;
  if (rc == 0)
    ret = policy_mtasts_rec_decode(v.mv_data, v.mv_size, rec) == 0
              ? 0
              : POSTERN_ENOENT;
  else if (rc != MDB_NOTFOUND)
    ret = POSTERN_EIO;
  mdb_txn_abort(txn);
  return ret;
}

/* One more small commit, so that the pages the previous commits freed
 * become reusable (see the file comment). Returns an MDB code. */
static int tick(struct policy_mtasts_cache *c) {
  /* Reader slots of killed processes (a qtool hit by kill -9) pin old
   * snapshots and so their pages: clear them first. */
  int dead = 0;
  mdb_reader_check(c->env, &dead);
  MDB_txn *txn;
  int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
  if (rc)
    return rc;
  MDB_val k = {sizeof TICK_KEY - 1, (void *)TICK_KEY}, v;
  uint64_t n = 0;
  if (mdb_get(txn, c->dbi, &k, &v) == 0 && v.mv_size == sizeof n)
    memcpy(&n, v.mv_data, sizeof n);
  n++;
  v = (MDB_val){.mv_size = sizeof n, .mv_data = &n};
  if ((rc = mdb_put(txn, c->dbi, &k, &v, 0)) != 0) {
    mdb_txn_abort(txn);
    return rc;
  }
  return mdb_txn_commit(txn);
}

/* Whether the pages in use (both trees; free pages excluded) leave less
 * than the headroom free in the map. */
static bool over_soft_limit(struct policy_mtasts_cache *c, MDB_txn *txn) {
  MDB_stat m, f;
  MDB_envinfo info;
  if (mdb_stat(txn, c->dbi, &m) != 0 || mdb_stat(txn, FREE_DBI, &f) != 0 ||
      mdb_env_info(c->env, &info) != 0 || m.ms_psize == 0)
    return false;
  uint64_t pages = info.me_mapsize / m.ms_psize;
  uint64_t live = 2 /* meta */ + m.ms_branch_pages + m.ms_leaf_pages +
                  m.ms_overflow_pages + f.ms_branch_pages + f.ms_leaf_pages +
                  f.ms_overflow_pages;
  return live + HEADROOM(pages) > pages;
}

/* One write of an encoded value; a new key is refused (MDB_MAP_FULL) when
 * the map is over its soft limit. Returns an MDB code. */
static int put_raw(struct policy_mtasts_cache *c, const char *domain,
                   const void *val, size_t len) {
  MDB_txn *txn;
  int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
  if (rc)
    return rc;
  MDB_val k = key_of(domain), v = {.mv_size = len, .mv_data = (void *)val};
  MDB_val old;
  if (mdb_get(txn, c->dbi, &k, &old) == MDB_NOTFOUND &&
      over_soft_limit(c, txn)) {
    mdb_txn_abort(txn);
    return MDB_MAP_FULL;
  }
  if ((rc = mdb_put(txn, c->dbi, &k, &v, 0)) != 0) {
    mdb_txn_abort(txn);
    return rc;
  }
  return mdb_txn_commit(txn);
}

static int store(struct policy_mtasts_cache *c, const char *domain,
                 const struct policy_mtasts_rec *rec, uint64_t now) {
  uint8_t *buf = malloc(POLICY_MTASTS_REC_MAX);
  if (buf == NULL)
    return POSTERN_ENOMEM;
  size_t len = policy_mtasts_rec_encode(rec, buf, POLICY_MTASTS_REC_MAX);
  int ret = POSTERN_EINVAL;
  if (len > 0) {
    int rc = put_raw(c, domain, buf, len);
    if (rc == MDB_MAP_FULL) {
      /* Make room from what has expired, then try once more. */
      policy_mtasts_cache_sweep(c, now, NULL, NULL, NULL, NULL);
      tick(c);
      rc = put_raw(c, domain, buf, len);
    }
    if (rc == MDB_MAP_FULL) {
      atomic_fetch_add(&c->full_events, 1);
      ret = POSTERN_ENOSPC;
    } else {
      ret = rc == 0 ? 0 : POSTERN_EIO;
    }
  }
  free(buf);
  return ret;
}

int policy_mtasts_cache_put(struct policy_mtasts_cache *c, const char *domain,
                            const struct policy_mtasts_rec *rec, uint64_t now) {
  if (domain[0] == '\0' || domain[0] == '#' || strlen(domain) > 253)
    return POSTERN_EINVAL;
  return store(c, domain, rec, now);
}

int policy_mtasts_cache_touch(struct policy_mtasts_cache *c, const char *domain,
                              uint64_t last_used, uint64_t tried) {
  struct policy_mtasts_rec *rec = malloc(sizeof *rec);
  if (rec == NULL)
    return POSTERN_ENOMEM;
  /* Read and write are two transactions: a fetch that stored a new record
   * in between loses only these times, which are advisory. */
  int rc = policy_mtasts_cache_get(c, domain, rec);
  if (rc == 0) {
    if (last_used)
      rec->last_used = last_used;
    if (tried)
      rec->tried = tried;
    /* No eviction for bookkeeping: now = 0 expires nothing. */
    rc = store(c, domain, rec, 0);
  }
  free(rec);
  return rc;
}

/* Deletes and visits up to `limit` records after `last` (from the start
 * when *have_last is false). Sets *done at the end of the database. */
static int sweep_chunk(struct policy_mtasts_cache *c, uint64_t now,
                       size_t limit, policy_mtasts_cache_each_cb each,
                       void *arg, char *last, bool *have_last, bool *done,
                       struct policy_mtasts_rec *rec, uint64_t *kept,
                       uint64_t *evicted) {
  MDB_txn *txn;
  MDB_cursor *cur;
  int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
  if (rc)
    return rc;
  if ((rc = mdb_cursor_open(txn, c->dbi, &cur)) != 0) {
    mdb_txn_abort(txn);
    return rc;
  }
  MDB_val k, v;
  if (*have_last) {
    k = key_of(last);
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && k.mv_size == strlen(last) &&
        memcmp(k.mv_data, last, k.mv_size) == 0)
      rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  } else {
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
  }
  uint64_t nkept = 0, nevicted = 0;
  for (size_t n = 0; rc == 0 && n < limit; n++) {
    char name[512];
    size_t klen = k.mv_size < sizeof name - 1 ? k.mv_size : sizeof name - 1;
    memcpy(name, k.mv_data, klen);
    name[klen] = '\0';
    if (is_domain_key(&k)) {
      if (policy_mtasts_rec_decode(v.mv_data, v.mv_size, rec) != 0 ||
          rec->expires <= now) {
        /* The cursor then stands on the next record: MDB_NEXT below
         * returns it without moving on. */
        if ((rc = mdb_cursor_del(cur, 0)) != 0)
          break;
        nevicted++;
      } else {
        if (each)
          each(arg, name, rec);
        nkept++;
      }
    }
    memcpy(last, name, klen + 1);
    *have_last = true;
    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    mdb_txn_abort(txn);
    return rc;
  }
  *done = rc == MDB_NOTFOUND;
  if ((rc = mdb_txn_commit(txn)) != 0)
    return rc;
  *kept += nkept;
  *evicted += nevicted;
  return 0;
}

int policy_mtasts_cache_sweep(struct policy_mtasts_cache *c, uint64_t now,
                              policy_mtasts_cache_each_cb each, void *arg,
                              uint64_t *kept, uint64_t *evicted) {
  struct policy_mtasts_rec *rec = malloc(sizeof *rec);
  if (rec == NULL)
    return POSTERN_ENOMEM;
  char last[512];
  bool have_last = false, done = false, retried = false;
  uint64_t nkept = 0, nevicted = 0;
  size_t limit = SWEEP_CHUNK;
  int rc = 0;
  while (!done) {
    char save[512];
    bool save_have = have_last;
    memcpy(save, last, sizeof save);
    rc = sweep_chunk(c, now, limit, each, arg, last, &have_last, &done, rec,
                     &nkept, &nevicted);
    if (rc == MDB_MAP_FULL && !retried) {
      /* Deleting copies pages too: in a full map, free what the previous
       * chunks released and go on in small steps. */
      memcpy(last, save, sizeof save);
      have_last = save_have;
      retried = true;
      limit = 16;
      tick(c);
      continue;
    }
    if (rc != 0)
      break;
  }
  free(rec);
  if (kept)
    *kept = nkept;
  if (evicted)
    *evicted = nevicted;
  return rc == 0 ? 0 : POSTERN_EIO;
}

static int stat_env(MDB_env *env, MDB_dbi dbi,
                    struct policy_mtasts_cache_stat *st) {
  MDB_txn *txn;
  MDB_stat ms;
  MDB_envinfo info;
  if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0)
    return POSTERN_EIO;
  int rc = mdb_stat(txn, dbi, &ms);
  MDB_val k = {sizeof TICK_KEY - 1, (void *)TICK_KEY}, v;
  bool tick_present = rc == 0 && mdb_get(txn, dbi, &k, &v) == 0;
  mdb_txn_abort(txn);
  if (rc != 0 || mdb_env_info(env, &info) != 0)
    return POSTERN_EIO;
  st->entries = ms.ms_entries - (tick_present ? 1 : 0);
  st->used_bytes = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
  st->map_size = info.me_mapsize;
  return 0;
}

int policy_mtasts_cache_stat(struct policy_mtasts_cache *c,
                             struct policy_mtasts_cache_stat *st) {
  memset(st, 0, sizeof *st);
  st->full_events = atomic_load(&c->full_events);
  return stat_env(c->env, c->dbi, st);
}

int policy_mtasts_cache_stat_dir(const char *state_dir,
                                 struct policy_mtasts_cache_stat *st) {
  char path[PATH_MAX], data[PATH_MAX + 16];
  int n = snprintf(path, sizeof path, "%s/mtasts", state_dir);
  if (n < 0 || (size_t)n >= sizeof path)
    return POSTERN_EINVAL;
  snprintf(data, sizeof data, "%s/data.mdb", path);
  struct stat sb;
  if (stat(data, &sb) != 0)
    return errno == ENOENT || errno == ENOTDIR ? POSTERN_ENOENT : POSTERN_EIO;
  memset(st, 0, sizeof *st);
  MDB_env *env;
  MDB_dbi dbi;
  /* Map size 0: LMDB takes the size the relay stored in the file. */
  int rc = env_open(path, 0, MDB_RDONLY, &env, &dbi);
  if (rc != 0)
    return rc;
  rc = stat_env(env, dbi, st);
  mdb_env_close(env);
  return rc;
}
