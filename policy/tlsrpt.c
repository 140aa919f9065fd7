/*
 * policy/tlsrpt.c - names of the RFC 8460 result and policy types (see
 * tlsrpt.h). Pure tables; no state.
 */
#include "policy/tlsrpt.h"

#include <string.h>

static const char *const result_names[POLICY_TLSRPT_RESULT_COUNT] = {
    [POLICY_TLSRPT_SUCCESS] = "success",
#define POLICY__TLSRPT_RESULT_NAME(name, s) [POLICY_TLSRPT_##name] = s,
    POLICY_TLSRPT_RESULT_MAP(POLICY__TLSRPT_RESULT_NAME)
#undef POLICY__TLSRPT_RESULT_NAME
};

static const char *const policy_names[POLICY_TLSRPT_POLICY_COUNT] = {
#define POLICY__TLSRPT_POLICY_NAME(name, s) [POLICY_TLSRPT_POLICY_##name] = s,
    POLICY_TLSRPT_POLICY_MAP(POLICY__TLSRPT_POLICY_NAME)
#undef POLICY__TLSRPT_POLICY_NAME
};

const char *policy_tlsrpt_result_name(enum policy_tlsrpt_result r) {
  if ((unsigned)r >= POLICY_TLSRPT_RESULT_COUNT)
    return "unknown";
  return result_names[r];
}

int policy_tlsrpt_result_parse(const char *s) {
  for (int i = 0; s != NULL && i < POLICY_TLSRPT_RESULT_COUNT; i++)
    if (strcmp(s, result_names[i]) == 0)
      return i;
  return -1;
}

const char *policy_tlsrpt_policy_name(enum policy_tlsrpt_policy_type t) {
  if ((unsigned)t >= POLICY_TLSRPT_POLICY_COUNT)
    return "unknown";
  return policy_names[t];
}

int policy_tlsrpt_policy_parse(const char *s) {
  for (int i = 0; s != NULL && i < POLICY_TLSRPT_POLICY_COUNT; i++)
    if (strcmp(s, policy_names[i]) == 0)
      return i;
  return -1;
}
