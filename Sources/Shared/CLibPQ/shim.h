#ifndef BUILDD_CLIBPQ_SHIM_H
#define BUILDD_CLIBPQ_SHIM_H

#if __has_include(<libpq-fe.h>)
#include <libpq-fe.h>
#else
#include <postgresql/libpq-fe.h>
#endif
#include <poll.h>

static void buildd_pq_ignore_notice(void *arg, const char *message) {
    (void)arg;
    (void)message;
}

/* Keeps libpq from printing NOTICEs to stderr. */
static inline void buildd_pq_silence_notices(PGconn *conn) {
    PQsetNoticeProcessor(conn, buildd_pq_ignore_notice, 0);
}

#endif
