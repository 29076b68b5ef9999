/* atomic_file -- write a file under a temporary name beside its target and
 * rename it into place, so a failed write never leaves a partial file (or
 * anything at all) at the target path. The temporary name is unique
 * (mkstemp, "<path>.tmp-XXXXXX"), never a fixed "<path>.tmp".
 */
#ifndef SS_ATOMIC_FILE_H
#define SS_ATOMIC_FILE_H

#include <stdio.h>

typedef struct ss_afile ss_afile; /* opaque: stream, temporary and target path */

/* Create a temporary file in path's directory. On error returns SS_ERR_IO
 * (errno kept) or SS_ERR_NOMEM and writes a message naming path into err. */
int ss_afile_open(const char *path, ss_afile **out, char *err, size_t errsz);
/* The stream to write to; owned by the ss_afile. */
FILE *ss_afile_stream(ss_afile *af);
/* Flush, fsync, close and rename onto the target, then fsync the target's
 * directory; frees af in every case. On error the temporary file is
 * removed (an error syncing the directory comes after the rename: the
 * target is then in place but maybe not durable). */
int ss_afile_commit(ss_afile *af, char *err, size_t errsz);
/* Close and remove the temporary file; frees af. Accepts NULL. */
void ss_afile_abort(ss_afile *af);

#endif
