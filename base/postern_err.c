/*
 * postern_err.c - names and messages of the error codes in postern_err.h.
 * Both tables are generated from POSTERN_ERRNO_MAP, so they cannot drift.
 */
#include "base/postern_err.h"

#include <errno.h>

static const char *const err_msgs[] = {
#define POSTERN__ERR_MSG(name, msg) msg,
    POSTERN_ERRNO_MAP(POSTERN__ERR_MSG)
#undef POSTERN__ERR_MSG
};

static const char *const err_names[] = {
#define POSTERN__ERR_NAME(name, msg) #name,
    POSTERN_ERRNO_MAP(POSTERN__ERR_NAME)
#undef POSTERN__ERR_NAME
};

const char *postern_strerror(int err) {
  if (err == 0)
    return "success";
  if (err < 0 && -err <= POSTERN__ERR_COUNT)
    return err_msgs[-err - 1];
  return "unknown error";
}

const char *postern_err_name(int err) {
  if (err == 0)
    return "OK";
  if (err < 0 && -err <= POSTERN__ERR_COUNT)
    return err_names[-err - 1];
  return "UNKNOWN";
}

int postern_err_from_errno(int errnum) {
  switch (errnum) {
  case ENOMEM:
    return POSTERN_ENOMEM;
  case EINVAL:
    return POSTERN_EINVAL;
  case ENOENT:
    return POSTERN_ENOENT;
  case EEXIST:
    return POSTERN_EEXIST;
  case ENOSPC:
  case EDQUOT:
    return POSTERN_ENOSPC;
  case EACCES:
  case EPERM:
    return POSTERN_EPERM;
  case ETIMEDOUT:
    return POSTERN_ETIMEOUT;
  case ECONNREFUSED:
    return POSTERN_ECONNREFUSED;
  case ENETUNREACH:
  case EHOSTUNREACH:
    return POSTERN_ENETUNREACH;
  case EADDRINUSE:
    return POSTERN_EADDRINUSE;
  case ECONNRESET:
  case EPIPE:
    return POSTERN_ECLOSED;
  case EAGAIN:
    return POSTERN_EAGAIN;
  case EBUSY:
    return POSTERN_EBUSY;
  case ECANCELED:
    return POSTERN_ECANCELED;
  case E2BIG:
  case EFBIG:
  case EMSGSIZE:
    return POSTERN_ETOOBIG;
  default:
    return POSTERN_EIO;
  }
}
