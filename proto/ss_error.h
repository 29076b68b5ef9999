/* ss_error -- error codes shared by every statesaver program and library.
 *
 * Functions return 0 on success or one of the negative codes below. A
 * server status (gRPC-style code carried in Response.status) maps to
 * SS_ERR_STATUS(code), so a client can return it through the same int.
 */
#ifndef SS_ERROR_H
#define SS_ERROR_H

enum {
    SS_OK = 0,
    SS_ERR_NOMEM = -1,       /* allocation failed */
    SS_ERR_INVALID = -2,     /* bad argument from the caller */
    SS_ERR_IO = -3,          /* system call failed; see errno */
    SS_ERR_PROTO = -4,       /* malformed frame or message */
    SS_ERR_TOO_BIG = -5,     /* a size exceeds its limit */
    SS_ERR_TIMEOUT = -6,     /* deadline passed */
    SS_ERR_CLOSED = -7,      /* peer closed the connection */
    SS_ERR_NOT_FOUND = -8,   /* no such entry */
    SS_ERR_CONFLICT = -9,    /* compare-and-set or schema mismatch */
    SS_ERR_FORMAT = -10,     /* bad file format (npy, safetensors, ...) */
    SS_ERR_SHAPE = -11,      /* tensor shape or dtype mismatch */
    SS_ERR_STORE = -12,      /* storage engine (LMDB) failure */
    SS_ERR_FULL = -13,       /* a capacity is exhausted */
    SS_ERR_CONNECT = -14,    /* could not connect / resolve */
    SS_ERR_AUTH = -15,       /* authentication refused */
    SS_ERR_INTERNAL = -16,   /* a bug: an invariant did not hold */
};

/* Server status codes (gRPC numbering) are mapped into -100 - code. */
#define SS_ERR_STATUS_BASE (-100)
#define SS_ERR_STATUS(code) (SS_ERR_STATUS_BASE - (int)(code))
#define SS_IS_STATUS_ERR(err) ((err) <= SS_ERR_STATUS_BASE && (err) > SS_ERR_STATUS_BASE - 64)
#define SS_STATUS_CODE(err) (SS_ERR_STATUS_BASE - (err))

/* Human-readable text for any code above (static storage, never NULL). */
const char *ss_strerror(int err);

/* Name of a gRPC-style status code ("FAILED_PRECONDITION"); never NULL. */
const char *ss_status_name(int code);

#endif
