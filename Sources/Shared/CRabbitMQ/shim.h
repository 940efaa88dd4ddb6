#ifndef BUILDD_CRABBITMQ_SHIM_H
#define BUILDD_CRABBITMQ_SHIM_H

/* rabbitmq-c >= 0.12 installs <rabbitmq-c/amqp.h>; Debian 12's 0.11 installs flat headers. */
#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/tcp_socket.h>
#include <rabbitmq-c/ssl_socket.h>
#include <rabbitmq-c/framing.h>
#else
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <amqp_ssl_socket.h>
#include <amqp_framing.h>
#endif

#include <poll.h>
#include <sys/time.h>

/* amqp_login is variadic, which Swift cannot call: PLAIN login through a fixed signature. */
static inline amqp_rpc_reply_t buildd_amqp_login_plain(amqp_connection_state_t state, const char *vhost,
                                                       int channel_max, int frame_max, int heartbeat,
                                                       const char *user, const char *password) {
    return amqp_login(state, vhost, channel_max, frame_max, heartbeat, AMQP_SASL_METHOD_PLAIN, user, password);
}

/* The same with client properties (e.g. connection_name, which the broker shows as the connection's name);
   librabbitmq merges them with its own (product, version, capabilities). */
static inline amqp_rpc_reply_t buildd_amqp_login_plain_properties(amqp_connection_state_t state, const char *vhost,
                                                                  int channel_max, int frame_max, int heartbeat,
                                                                  const amqp_table_t *properties,
                                                                  const char *user, const char *password) {
    return amqp_login_with_properties(state, vhost, channel_max, frame_max, heartbeat, properties,
                                      AMQP_SASL_METHOD_PLAIN, user, password);
}

/* The decoded method of a method frame (a union member in C). */
static inline amqp_method_number_t buildd_frame_method_id(const amqp_frame_t *frame) {
    return frame->payload.method.id;
}
static inline void *buildd_frame_method_decoded(const amqp_frame_t *frame) {
    return frame->payload.method.decoded;
}

#endif
