/*
 * postern_lmdb.h - what every LMDB environment of Postern shares (the
 * queue, the MTA-STS policy cache): the lock file's disk blocks.
 *
 * LMDB maps its lock file (<dir>/lock.mdb) with MAP_SHARED and writes into
 * it through the mapping. On a full file system a page of that mapping may
 * have no block behind it yet, and the first write to it kills the process
 * with SIGBUS instead of returning an error (seen with the state directory
 * on a full tmpfs). Reserving the blocks before mdb_env_open turns that into
 * a clean POSTERN_ENOSPC.
 */
#ifndef POSTERN_LMDB_H
#define POSTERN_LMDB_H

#include <stddef.h>

/* Enough for LMDB's lock file with up to 2,000 reader slots (64 bytes
 * each, plus its header). */
#define POSTERN_LMDB_LOCK_RESERVE ((size_t)256 * 1024)

/*
 * Creates `dir`/lock.mdb (mode 0600) if it is missing and reserves disk
 * blocks for its first `bytes` (posix_fallocate; the file never shrinks).
 * Call before mdb_env_open on `dir`. Returns 0, POSTERN_ENOSPC (no space:
 * opening the environment would crash), POSTERN_EINVAL (path too long) or
 * POSTERN_EIO (any other failure, errno kept).
 */
int postern_lmdb_reserve_lock(const char *dir, size_t bytes);

#endif
