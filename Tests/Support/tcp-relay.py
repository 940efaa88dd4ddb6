#!/usr/bin/env python3
"""A TCP relay that a test can cut, standing for the network between a master and its database.

    tcp-relay.py [--delay SECONDS] [--cut-after-commit-of TEXT HEAL_SECONDS]
                 LISTEN_PORT TARGET_HOST TARGET_PORT [ORPHAN_SECONDS]

--delay holds what a client sends on each new connection that long before the server gets any of it: a
slow server (e.g. a broker's management API under load) for a client that opens a connection per request.

--cut-after-commit-of cuts once, as SIGUSR1 does, right after the COMMIT of the first transaction that
sent TEXT reached the server, and heals HEAL_SECONDS later: the transaction is committed and the client
never hears so.

Prints "listening" once it accepts connections on 127.0.0.1:LISTEN_PORT.

SIGUSR1 cuts, as a partition does, and each side learns of it as it would there:

- the client (a master) has its relayed connections reset at once: it stands for the client's own TCP
  timeouts firing (buildd's tcp_user_timeout and keepalives), only sooner;
- the server (the database) hears nothing: its side of each relayed connection stays open, whatever it
  sends is read and dropped, and it is closed only ORPHAN_SECONDS (default 20) later, as a server's own
  keepalives would end it. A session the cut left in the middle of a transaction keeps its locks that long
  unless the server ends it by itself (idle_in_transaction_session_timeout);
- connections made while cut are accepted but never answered (a connection attempt waits for its
  timeout, as towards a host that is gone).

SIGHUP cuts the same way, but inside a transaction: at the next statement a client sends after BEGIN (once
that statement is on its way to the server), or after 2 s if no client is inside one. A real cut lands there
now and then; this makes it land there every time.

SIGUSR2 heals: connections held while cut are closed, and new connections are relayed again. The orphaned
server sides stay orphaned (after a heal, a server still learns of them only by its keepalives).

No socket is closed while another thread may be blocked on it (close(2) would not wake that thread, and the
connection would live on): a cut shuts the client's socket down, which wakes its reader, and that reader
closes it.
"""
import signal
import socket
import sys
import threading
import time

lock = threading.RLock()  # re-entrant: the signal handlers run on the main thread, which may hold it
cut = False
cut_pending = False  # SIGHUP: cut at the next statement inside a transaction
pairs = set()     # relayed connections
held = []         # connections accepted while cut
orphan_seconds = 20.0
delay_seconds = 0.0
commit_watch = None  # (TEXT as bytes, heal seconds) of --cut-after-commit-of, until it fires


class Pair:
    def __init__(self, client, upstream):
        self.client = client
        self.upstream = upstream
        self.orphaned_at = None  # when the cut left the server side alone
        self.in_transaction = False  # the client sent BEGIN and not yet COMMIT or ROLLBACK
        self.watched = False  # this transaction sent the text of --cut-after-commit-of

    def cut(self):
        """Resets the client side (its reader closes it) and orphans the server side."""
        if self.orphaned_at is not None:
            return
        self.orphaned_at = time.monotonic()
        try:
            self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.client.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def client_to_server(pair):
    delayed = delay_seconds > 0
    try:
        while True:
            data = pair.client.recv(65536)
            if delayed:
                time.sleep(delay_seconds)
                delayed = False
            if not data or pair.orphaned_at is not None:
                break
            # Statements travel whole in one write (libpq's Parse message carries the SQL text).
            began, ended = data.rfind(b"BEGIN\x00"), max(data.rfind(b"COMMIT\x00"), data.rfind(b"ROLLBACK\x00"))
            statement_inside = pair.in_transaction and began < 0 and ended < 0
            if began >= 0 or ended >= 0:
                pair.in_transaction = began > ended
            if commit_watch and pair.in_transaction and commit_watch[0] in data:
                pair.watched = True
            watched_commit = False
            if ended >= 0:
                watched_commit = bool(pair.watched and commit_watch and data.rfind(b"COMMIT\x00") >= 0)
                pair.watched = False
            if watched_commit or (statement_inside and cut_pending):
                # This statement reaches the server; its answer, and the rest, never reach the client. The cut
                # comes first, so that the server's answer is dropped instead of racing the cut to the client.
                if watched_commit:
                    cut_after_commit()
                else:
                    on_cut()
                pair.upstream.sendall(data)
                break
            pair.upstream.sendall(data)
    except OSError:
        pass
    with lock:
        orphaned = pair.orphaned_at is not None
    if not orphaned:
        # The client went away by itself: the server hears of it, as on a working network.
        try:
            pair.upstream.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    pair.client.close()


def server_to_client(pair):
    pair.upstream.settimeout(0.5)
    try:
        while True:
            if pair.orphaned_at is not None and time.monotonic() - pair.orphaned_at >= orphan_seconds:
                break
            try:
                data = pair.upstream.recv(65536)
            except socket.timeout:
                continue
            if not data:
                break
            if pair.orphaned_at is None:
                try:
                    pair.client.sendall(data)
                except OSError:
                    pair.cut()  # the client is gone: from here on the server's output is dropped
    except OSError:
        pass
    try:
        pair.client.shutdown(socket.SHUT_RDWR)  # wakes the client's reader, which closes the client side
    except OSError:
        pass
    pair.upstream.close()
    with lock:
        pairs.discard(pair)


def on_cut(*_):
    global cut, cut_pending
    with lock:
        cut = True
        cut_pending = False
        victims = list(pairs)
    for pair in victims:
        pair.cut()


def cut_after_commit():
    """The watched COMMIT is on its way to the server: cut now, heal a while later, and watch no more."""
    global commit_watch
    with lock:
        heal_after = commit_watch[1]
        commit_watch = None
    on_cut()
    print("cut after a watched COMMIT", flush=True)

    def heal_later():
        time.sleep(heal_after)
        on_heal()
    threading.Thread(target=heal_later, daemon=True).start()


def on_cut_in_transaction(*_):
    global cut_pending
    with lock:
        cut_pending = True

    def fallback():
        time.sleep(2)
        with lock:
            pending = cut_pending
        if pending:
            on_cut()
    threading.Thread(target=fallback, daemon=True).start()


def on_heal(*_):
    global cut
    with lock:
        cut = False
        waiting = list(held)
        held.clear()
    for sock in waiting:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()  # no thread reads these
        except OSError:
            pass


def main():
    global orphan_seconds, delay_seconds
    arguments = sys.argv[1:]
    global commit_watch
    while arguments[:1] in (["--delay"], ["--cut-after-commit-of"]):
        if arguments[0] == "--delay":
            delay_seconds = float(arguments[1])
            arguments = arguments[2:]
        else:
            commit_watch = (arguments[1].encode(), float(arguments[2]))
            arguments = arguments[3:]
    listen_port, host, port = int(arguments[0]), arguments[1], int(arguments[2])
    if len(arguments) > 3:
        orphan_seconds = float(arguments[3])
    # A child of the test runner may inherit a mask that blocks these.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP})
    signal.signal(signal.SIGUSR1, on_cut)
    signal.signal(signal.SIGHUP, on_cut_in_transaction)
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
            client.close()
            continue
        pair = Pair(client, upstream)
        with lock:
            pairs.add(pair)
            if cut:  # cut while connecting
                pair.cut()
        threading.Thread(target=client_to_server, args=(pair,), daemon=True).start()
        threading.Thread(target=server_to_client, args=(pair,), daemon=True).start()


if __name__ == "__main__":
    main()
