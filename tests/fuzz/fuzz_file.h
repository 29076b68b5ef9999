/* fuzz_file -- hand a fuzz input to a reader that takes a path.
 *
 * The readers under test (safetensors, .npy) open files by name, so each
 * input is written to one file in a private temporary directory (under
 * $TMPDIR) that is removed at exit.
 */
#ifndef FUZZ_FILE_H
#define FUZZ_FILE_H

#include <stddef.h>
#include <stdint.h>

/* Write data[0..size) to the harness's file (replacing it) and return its
 * path, valid until the next call. Aborts when the file cannot be written. */
const char *fuzz_file_put(const uint8_t *data, size_t size, const char *suffix);

/* Read every byte of p[0..n) (so ASan checks the whole range). */
void fuzz_touch(const void *p, size_t n);

#endif
