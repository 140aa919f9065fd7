/*
 * engine/tlsrpt_send.h - TLS reporting (RFC 8460), sending the daily
 * reports (tlsrpt_send.c). Engine-internal; run from maint.c.
 */
#ifndef POSTERN_ENGINE_TLSRPT_SEND_H
#define POSTERN_ENGINE_TLSRPT_SEND_H

#include <uv.h>

#include "engine/internal.h"

struct dns_resolver;
struct https_client;

/* Starts the once-a-minute check for reports due, on `loop` with the given
 * resolver and HTTPS client (NULL: https: URIs fail), which must outlive
 * engine__tlsrpt_send_stop. Does nothing while the configuration has no
 * tlsrpt block. */
void engine__tlsrpt_send_start(struct relay *r, uv_loop_t *loop,
                               struct dns_resolver *dns,
                               struct https_client *https);

/* Stops checking; sends in flight end when the resolver and HTTPS client
 * are closed (after this call). */
void engine__tlsrpt_send_stop(void);

#endif
