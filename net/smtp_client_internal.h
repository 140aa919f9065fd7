/*
 * net/smtp_client_internal.h - constants shared by net/smtp_client*.c and
 * their tests; not part of the public API.
 */
#ifndef POSTERN_NET_SMTP_CLIENT_INTERNAL_H
#define POSTERN_NET_SMTP_CLIENT_INTERNAL_H

#include "net/smtp_reply.h"

/* Defaults for `delivery { connect_timeout; command_timeout; data_timeout }`
 * (RFC 5321 §4.5.3.2 suggests 5 min per command and 10 min after the
 * final "."). */
#define DEFAULT_CONNECT_TIMEOUT_MS (30u * 1000)
#define DEFAULT_COMMAND_TIMEOUT_MS (5u * 60 * 1000)
#define DEFAULT_DATA_TIMEOUT_MS (10u * 60 * 1000)

/* Pipelined replies to many RCPTs can arrive together; the buffer holds
 * one maximal reply plus room for the next read. */
#define RBUF_CAP (SMTP_REPLY_BYTES_MAX + 16384)
#define RAW_CAP 65536

/* Body writes: at most this many bytes / buffers per write request, so a
 * large message is streamed with back-pressure and a bounded iovec. */
#define BODY_CHUNK (256u * 1024)
#define BODY_BUFS 64

/* RFC 5321 §4.5.3.1.3: a path is at most 256 octets; we allow slack but
 * refuse anything that could not fit a single command line. */
#define ADDR_MAX 512
#define PARAM_MAX 600

#endif
