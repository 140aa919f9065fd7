/*
 * smtp_server_state.c - the server session's state names.
 */
#include "net/smtp_server_internal.h"

static const char *const state_names[] = {
#define STATE_NAME(name, str) str,
    SMTP_SERVER__STATE_MAP(STATE_NAME)
#undef STATE_NAME
};

const char *smtp_server__state_name(enum smtp_server__state s) {
  if ((unsigned)s < sizeof state_names / sizeof state_names[0])
    return state_names[s];
  return "?";
}
