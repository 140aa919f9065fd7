/*
 * online.h - postern-probe's online mode (see online.c).
 */
#ifndef POSTERN_TOOLS_PROBE_ONLINE_H
#define POSTERN_TOOLS_PROBE_ONLINE_H

#include <stdbool.h>

/* Probes `domain` with the configuration at `config_path`; prints text or
 * JSON on stdout. Returns the exit status: 0 deliver, 1 defer or bounce,
 * 2 configuration error. `verbose` logs every step at debug level. */
int probe_online(const char *config_path, const char *domain, bool json,
                 bool verbose);

#endif
