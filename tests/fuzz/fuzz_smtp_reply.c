/*
 * fuzz_smtp_reply.c - libFuzzer target for smtp_reply_parse()
 * (net/smtp_reply.h), the SMTP client's reply parser.
 *
 * The input is what a server sends; the target parses reply after reply as
 * a pipelining client does, until NEED_MORE or PROTO_ERROR. Beyond "no
 * crash" it checks, for every reply parsed:
 *  - OK consumed between 4 bytes and SMTP_REPLY_BYTES_MAX, ending in LF;
 *    the code is 200..559 with a second digit 0..5; there are 1 to
 *    SMTP_REPLY_LINES_MAX lines; the text is NUL-terminated at text_len
 *    <= SMTP_REPLY_TEXT_MAX with no NUL inside; an enhanced code is
 *    "C.S.D" whose class is the reply's first digit;
 *  - PROTO_ERROR sets a static reason;
 *  - re-parsing is what the header promises callers can rely on: exactly
 *    the consumed bytes give the same reply, one byte fewer gives
 *    NEED_MORE (a caller that read less would simply wait), and a
 *    NEED_MORE at some prefix never turns a complete reply into an error;
 *  - smtp_reply_format() NUL-terminates into any capacity and returns what
 *    it wrote.
 */
#include "net/smtp_reply.h"
#include "tests/fuzz/fuzz_util.h"

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

static void check_enh(const struct smtp_reply *r) {
  if (!r->has_enh) {
    FUZZ_CHECK(r->enh[0] == '\0');
    return;
  }
  const char *e = r->enh;
  FUZZ_CHECK(memchr(e, '\0', sizeof r->enh) != NULL);
  FUZZ_CHECK(e[0] == '0' + r->code / 100 && e[1] == '.');
  size_t i = 2, d = 0;
  while (is_digit(e[i]))
    i++, d++;
  FUZZ_CHECK(d >= 1 && d <= 3 && e[i] == '.');
  i++;
  d = 0;
  while (is_digit(e[i]))
    i++, d++;
  FUZZ_CHECK(d >= 1 && d <= 3 && e[i] == '\0');
}

static void check_ok(const char *buf, size_t len, const struct smtp_reply *r,
                     size_t consumed) {
  FUZZ_CHECK(consumed >= 4 && consumed <= len);
  FUZZ_CHECK(consumed <= SMTP_REPLY_BYTES_MAX);
  FUZZ_CHECK(buf[consumed - 1] == '\n');
  FUZZ_CHECK(r->code >= 200 && r->code <= 559 && (r->code / 10) % 10 <= 5);
  FUZZ_CHECK(buf[0] == '0' + r->code / 100);
  FUZZ_CHECK(r->lines >= 1 && r->lines <= SMTP_REPLY_LINES_MAX);
  FUZZ_CHECK(r->text_len <= SMTP_REPLY_TEXT_MAX);
  FUZZ_CHECK(r->text[r->text_len] == '\0');
  FUZZ_CHECK(strlen(r->text) == r->text_len);
  check_enh(r);
  for (size_t cap = 1; cap <= 40; cap += 13) {
    char small[40];
    size_t w = smtp_reply_format(r, small, cap);
    FUZZ_CHECK(w < cap && small[w] == '\0' && strlen(small) == w);
  }
  char big[SMTP_REPLY_TEXT_MAX + 64];
  size_t w = smtp_reply_format(r, big, sizeof big);
  FUZZ_CHECK(w < sizeof big && strlen(big) == w);
  FUZZ_CHECK(w >= 3 && atoi(big) == r->code);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = fuzz_strndup(data, size);
  size_t pos = 0;
  while (pos < size) {
    const char *p = buf + pos;
    size_t left = size - pos;
    struct smtp_reply r;
    size_t consumed = 0;
    const char *why = NULL;
    enum smtp_reply_status st = smtp_reply_parse(p, left, &r, &consumed, &why);
    FUZZ_CHECK(strcmp(smtp_reply_status_name(st), "UNKNOWN") != 0);
    if (st == SMTP_REPLY_NEED_MORE)
      break;
    if (st == SMTP_REPLY_PROTO_ERROR) {
      FUZZ_CHECK(why != NULL && why[0] != '\0');
      break;
    }
    FUZZ_CHECK(st == SMTP_REPLY_OK);
    check_ok(p, left, &r, consumed);

    /* Exactly the consumed bytes: the same reply. */
    struct smtp_reply again;
    size_t c2 = 0;
    FUZZ_CHECK(smtp_reply_parse(p, consumed, &again, &c2, NULL) ==
               SMTP_REPLY_OK);
    FUZZ_CHECK(c2 == consumed && memcmp(&again, &r, sizeof r) == 0);
    /* One byte short: wait for more, never an error. */
    FUZZ_CHECK(smtp_reply_parse(p, consumed - 1, &again, &c2, NULL) ==
               SMTP_REPLY_NEED_MORE);
    /* Any shorter prefix (chosen by the data): NEED_MORE too. */
    size_t cut = (consumed * (unsigned char)p[0]) / 256;
    FUZZ_CHECK(smtp_reply_parse(p, cut, &again, &c2, NULL) ==
               SMTP_REPLY_NEED_MORE);
    pos += consumed;
  }
  free(buf);
  return 0;
}
