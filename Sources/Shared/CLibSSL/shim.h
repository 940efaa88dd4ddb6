#ifndef BUILDD_CLIBSSL_SHIM_H
#define BUILDD_CLIBSSL_SHIM_H

/* OpenSSL's libssl, for the agent's HTTPS client: librabbitmq links it already (amqps://), so the agent
   has it mapped anyway and a TLS client costs it no library of its own. */
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

/* Macros Swift does not import. */
static inline long buildd_ssl_set_sni(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}

static inline int buildd_ssl_ctx_min_tls12(SSL_CTX *context) {
    return (int)SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION);
}

#endif
