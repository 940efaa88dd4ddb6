#!/usr/bin/env python3
"""Delays packets by a fixed time, as `tc qdisc ... netem delay` would, for kernels built without sch_netem.

Packets are handed to it by an iptables NFQUEUE rule (deploy/localfarm cluster puts one on a test host's
outgoing link); it holds each one for DELAY milliseconds and then lets the kernel send it on. Packet loss
needs no help: the run drops packets with iptables' statistic match. The queue is read through
nfnetlink_queue (NETLINK_NETFILTER), metadata only - no payload is copied to user space.

    netdelay.py --queue 7 --delay-ms 200
"""
import argparse
import heapq
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NF_ACCEPT = 1
NLM_F_REQUEST = 1
NLMSG_ERROR = 2


def attribute(kind, payload):
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def message(kind, queue, attributes, seq):
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + b"".join(attributes)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, NLM_F_REQUEST, seq, 0) + body


def packet_ids(data):
    """The packet ids in a datagram of queued-packet messages."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        if kind == NLMSG_ERROR:
            error = struct.unpack_from("=i", data, offset + 16)[0]
            if error:
                raise OSError(-error, "nfnetlink refused a request")
        elif kind & 0xFF == NFQNL_MSG_PACKET:
            at = offset + 20  # past nlmsghdr and nfgenmsg
            while at + 4 <= offset + length:
                size, attr = struct.unpack_from("=HH", data, at)
                if size < 4:
                    break
                if attr & 0x7FFF == NFQA_PACKET_HDR:
                    yield struct.unpack_from("!I", data, at + 4)[0]
                at += (size + 3) & ~3
        offset += (length + 3) & ~3


def main():
    parser = argparse.ArgumentParser(description="Hold every packet of an NFQUEUE queue for a fixed time.")
    parser.add_argument("--queue", type=int, required=True, help="the NFQUEUE queue number")
    parser.add_argument("--delay-ms", type=float, default=200.0, help="how long each packet is held")
    args = parser.parse_args()
    delay = args.delay_ms / 1000.0
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((0, 0))
    seq = 1
    sock.send(message(NFQNL_MSG_CONFIG, args.queue, [attribute(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0))], seq))
    seq += 1
    sock.send(message(NFQNL_MSG_CONFIG, args.queue, [attribute(NFQA_CFG_PARAMS, struct.pack("!IBxxx", 0, NFQNL_COPY_META)),
                                                      attribute(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", 65536))], seq))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    held = []  # (release time, packet id)
    print("netdelay: holding queue %d's packets for %.0f ms" % (args.queue, args.delay_ms), flush=True)
    while True:
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else None
        readable, _, _ = select.select([sock], [], [], timeout)
        if readable:
            now = time.monotonic()
            for packet in packet_ids(sock.recv(1 << 16)):
                heapq.heappush(held, (now + delay, packet))
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, packet = heapq.heappop(held)
            seq += 1
            sock.send(message(NFQNL_MSG_VERDICT, args.queue,
                              [attribute(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet))], seq))


if __name__ == "__main__":
    main()
