#ifndef BUILDD_CLIBCRYPTO_SHIM_H
#define BUILDD_CLIBCRYPTO_SHIM_H

/* OpenSSL's libcrypto, for digests and HMAC: librabbitmq already links it (its TLS), so both daemons have it
   mapped anyway, and hashing a large artifact runs its assembly even in a debug build. */
#include <openssl/evp.h>
#include <openssl/hmac.h>

#endif
