/* ss_keyfmt -- the printable form of a binary key (sequence keys are
 * bytes), for messages and CLI output: printable ASCII as is; '\', the
 * quote ' (messages quote keys) and
 * every other byte as \xNN. The same form everywhere, so a key in a log
 * line can be matched with `statesaver ls` output.
 */
#ifndef SS_KEYFMT_H
#define SS_KEYFMT_H

#include <stddef.h>

/* Bytes needed for the whole form of a key of len bytes, NUL included. */
size_t ss_keyfmt_size(size_t len);

/* Write the printable form of key[0..len) into buf (size bytes, always
 * NUL-terminated when size > 0). If it does not fit, as many whole bytes
 * as fit are written followed by "..." (never half an escape). Returns
 * buf. */
const char *ss_keyfmt(char *buf, size_t size, const void *key, size_t len);

#endif
