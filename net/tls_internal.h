/*
 * net/tls_internal.h - helpers shared between net/tls*.c files only.
 */
#ifndef POSTERN_NET_TLS_INTERNAL_H
#define POSTERN_NET_TLS_INTERNAL_H

struct tls_conn;

/* The verification name (SNI) without trailing dot; NULL on servers. */
const char *tls__conn_server_name(const struct tls_conn *t);

#endif
