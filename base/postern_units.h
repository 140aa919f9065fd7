/*
 * postern_units.h - numbers with units as operators write them, in the
 * configuration file (docs/postern.conf.5) and on qtool's command line
 * (docs/qtool.8): durations ("250ms", "30s", "1h30m", "5d") and sizes
 * ("512K", "32M", "16G"), parsed and formatted. The one implementation of
 * both; the config and qtool choose their variants with flags.
 *
 * Pure functions: no allocation, no state, safe from any thread. Input is
 * `s`, `n` bytes, not necessarily NUL-terminated; nothing outside s[0..n)
 * is read. Parsers return 0, POSTERN_EINVAL (malformed) or POSTERN_ERANGE
 * (does not fit in 64 bits) and on error point *why at a static
 * explanation for the user ("unknown unit (use ms, s, m, h or d)"); they
 * never wrap or truncate. Formatters always NUL-terminate `buf` (cap > 0);
 * 32 bytes hold any value.
 */
#ifndef POSTERN_UNITS_H
#define POSTERN_UNITS_H

#include <stddef.h>
#include <stdint.h>

/*
 * Reads the decimal digits at s[*i..n) into *v and moves *i past them.
 * Returns 0, POSTERN_EINVAL when there is no digit at *i ("expected a
 * number"), or POSTERN_ERANGE when the number does not fit in 64 bits.
 */
int postern_digits_read(const char *s, size_t n, size_t *i, uint64_t *v,
                        const char **why);

/* Flags of postern_duration_parse. */
enum {
  /* A number without unit is seconds ("90" is 90s), as on qtool's command
   * line. Without it only "0" may go without a unit: in the config file a
   * bare number is more likely a forgotten unit than a wish for ms. */
  POSTERN_DURATION_BARE_SECONDS = 1u
};

/*
 * Parses a duration into milliseconds: a number and a unit (ms, s, m, h,
 * d), or several from the largest unit to the smallest, each once
 * ("1d12h", "1s500ms"); a bare "0". Units are lower case.
 */
int postern_duration_parse(const char *s, size_t n, unsigned flags,
                           uint64_t *ms, const char **why);

/* Flags of postern_duration_format. */
enum {
  /* For people reading an age: the largest unit and the next one, rounded
   * down to whole seconds ("3d4h", "2h0m", "12m5s", "45s", "0s"). Without
   * it the text is exact and canonical ("1h30m", "1s500ms", "0") and
   * postern_duration_parse reads it back to the same value. */
  POSTERN_DURATION_COARSE = 1u
};

void postern_duration_format(uint64_t ms, unsigned flags, char *buf,
                             size_t cap);

/*
 * Parses a size in bytes: a whole number, optionally followed by one
 * binary unit, K (2^10), M, G or T (2^40), in either case ("512k").
 */
int postern_size_parse(const char *s, size_t n, uint64_t *bytes,
                       const char **why);

/* Canonical text of a size: the largest unit that divides it exactly
 * ("32M", "1536"); postern_size_parse reads it back to the same value. */
void postern_size_format(uint64_t bytes, char *buf, size_t cap);

#endif
