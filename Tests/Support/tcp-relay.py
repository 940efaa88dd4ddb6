#!/usr/bin/env python3
"""A TCP relay that a test can cut, standing for the network between a master and its database.

    tcp-relay.py LISTEN_PORT TARGET_HOST TARGET_PORT

Prints "listening" once it accepts connections on 127.0.0.1:LISTEN_PORT. SIGUSR1 cuts: every relayed
connection is reset, and connections made while cut are accepted but never answered (a connection attempt
waits for its timeout, as towards a host that is gone). SIGUSR2 heals: those are closed, and new
connections are relayed again.
"""
import signal
import socket
import sys
import threading

lock = threading.RLock()  # re-entrant: the signal handlers run on the main thread, which may hold it
cut = False
relayed = set()   # sockets of relayed connections
held = []         # connections accepted while cut


def reset(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    except OSError:
        pass


def pump(source, sink):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with lock:
            relayed.discard(source)
            relayed.discard(sink)


def on_cut(*_):
    global cut
    with lock:
        cut = True
        victims = list(relayed)
        relayed.clear()
    for sock in victims:
        reset(sock)


def on_heal(*_):
    global cut
    with lock:
        cut = False
        waiting = list(held)
        held.clear()
    for sock in waiting:
        reset(sock)


def main():
    listen_port, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    # A child of the test runner may inherit a mask that blocks these.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1, signal.SIGUSR2})
    signal.signal(signal.SIGUSR1, on_cut)
    signal.signal(signal.SIGUSR2, on_heal)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(64)
    print("listening", flush=True)
    while True:
        try:
            client, _ = server.accept()
        except InterruptedError:
            continue
        with lock:
            if cut:
                held.append(client)
                continue
        try:
            upstream = socket.create_connection((host, port), timeout=5)
            upstream.settimeout(None)
        except OSError:
            reset(client)
            continue
        with lock:
            relayed.update((client, upstream))
        threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()


if __name__ == "__main__":
    main()
