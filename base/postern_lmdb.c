/*
 * postern_lmdb.c - see postern_lmdb.h. No LMDB calls here: only the file
 * LMDB will map, prepared so that mapping it cannot fault.
 */
#include "base/postern_lmdb.h"

#include "base/postern_err.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <unistd.h>

int postern_lmdb_reserve_lock(const char *dir, size_t bytes) {
  char path[PATH_MAX];
  int n = snprintf(path, sizeof path, "%s/lock.mdb", dir);
  if (n < 0 || (size_t)n >= sizeof path)
    return POSTERN_EINVAL;
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return errno == ENOSPC ? POSTERN_ENOSPC : POSTERN_EIO;
  /* posix_fallocate returns the error instead of setting errno. */
  int rc = posix_fallocate(fd, 0, (off_t)bytes);
  close(fd);
  if (rc == 0)
    return 0;
  errno = rc;
  /* A file system without fallocate (EOPNOTSUPP) gets LMDB's own
   * behaviour: nothing better is possible there. */
  if (rc == EOPNOTSUPP || rc == EINVAL)
    return 0;
  return rc == ENOSPC ? POSTERN_ENOSPC : POSTERN_EIO;
}
