/* ss_error -- text for statesaver error and status codes. */
#include "ss_error.h"

const char *ss_status_name(int code)
{
    switch (code) {
    case 0: return "OK";
    case 1: return "CANCELLED";
    case 2: return "UNKNOWN";
    case 3: return "INVALID_ARGUMENT";
    case 4: return "DEADLINE_EXCEEDED";
    case 5: return "NOT_FOUND";
    case 6: return "ALREADY_EXISTS";
    case 8: return "RESOURCE_EXHAUSTED";
    case 9: return "FAILED_PRECONDITION";
    case 12: return "UNIMPLEMENTED";
    case 13: return "INTERNAL";
    case 14: return "UNAVAILABLE";
    case 16: return "UNAUTHENTICATED";
    case 32: return "MOVED";
    default: return "UNKNOWN_CODE";
    }
}

const char *ss_strerror(int err)
{
    if (SS_IS_STATUS_ERR(err))
        return ss_status_name(SS_STATUS_CODE(err));
    switch (err) {
    case SS_OK: return "success";
    case SS_ERR_NOMEM: return "out of memory";
    case SS_ERR_INVALID: return "invalid argument";
    case SS_ERR_IO: return "I/O error";
    case SS_ERR_PROTO: return "protocol error";
    case SS_ERR_TOO_BIG: return "size limit exceeded";
    case SS_ERR_TIMEOUT: return "timed out";
    case SS_ERR_CLOSED: return "connection closed";
    case SS_ERR_NOT_FOUND: return "not found";
    case SS_ERR_CONFLICT: return "conflict";
    case SS_ERR_FORMAT: return "bad file format";
    case SS_ERR_SHAPE: return "shape or dtype mismatch";
    case SS_ERR_STORE: return "storage error";
    case SS_ERR_FULL: return "capacity exhausted";
    case SS_ERR_CONNECT: return "cannot connect";
    case SS_ERR_AUTH: return "authentication refused";
    case SS_ERR_INTERNAL: return "internal error";
    default: return "unknown error";
    }
}
