#!/usr/bin/env python3
"""A launchpad-buildd stand-in: the XML-RPC protocol 1.0 of Launchpad's builders, for buildd's tests.

One process serves any number of builders on one loopback port. A builder named NAME answers at
http://HOST:PORT/NAME/rpc (XML-RPC) and http://HOST:PORT/NAME/filecache/<sha1> (its file cache); it is
created on first use. Each builder is scriptable through a small JSON control API:

    POST /control/NAME   {"result": "OK", "duration": 2, "misbehave": null, ...}   -> sets its script
    GET  /control/NAME                                                         -> state and the calls made
    POST /control/_builds {"PACKAGEBUILD-12": [{"result": "GIVENBACK"}, {"result": "OK"}]}
                         -> scripts per build cookie, one per attempt (the last one stays), on any builder

Script keys (all optional):
    arch        architecture tag info() reports (default: --arch)
    protocol    protocol version info() reports (default "1.0")
    result      OK, PACKAGEFAIL, DEPFAIL, CHROOTFAIL, BUILDERFAIL or GIVENBACK (default OK)
    duration    seconds a build runs (default 1)
    files       {name: text} result files of OK/PACKAGEFAIL/DEPFAIL (default one .deb)
    file_bytes  {name: size} more result files of that size: bytes 0, 1, ... 255, 0, 1, ... (for big files)
    misbehave   null, or one of:
                  fault           every call answers Fault 8002 'error'
                  unknown-method  every call answers Fault 8001 (method not found)
                  hang            calls never answer
                  garbage         calls answer 200 with a body that is not XML
                  http500         calls answer HTTP 500
                  lose            once building, status() names another build_id
                  forget          once building, the builder is IDLE again
                  wedge           once building, it stays BUILDING with the same log tail forever
                  wedge-abort     abort() leaves it ABORTING forever
                  bad-sha1        a result file's content does not match its SHA-1
                  unknownbuilder  build() answers UNKNOWNBUILDER
                  unknownsum      build() answers UNKNOWNSUM (as if a file were missing)

Usage: buildd-standin.py [--host 127.0.0.1] [--port 0] [--arch amd64] [--duration SECONDS]
Prints "listening on PORT" on its first line of standard output.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import sys
import time
import urllib.request
import xmlrpc.client

BUILD_TYPES = ["binarypackage", "sourcepackagerecipe", "translation-templates", "livefs", "snap"]


class Fault(Exception):
    def __init__(self, code, message):
        self.code = code
        self.message = message


class Builder:
    def __init__(self, name, arch, farm):
        self.farm = farm
        self.name = name
        self.attempt_script = {}
        self.script = {"arch": arch}
        self.state = "BuilderStatus.IDLE"
        self.build_id = None
        self.started = None
        self.aborted_at = None
        self.result = None
        self.filemap = {}
        self.cache = {}
        self.log_lines = []
        self.calls = []

    # -- the protocol -------------------------------------------------------------------------

    def echo(self, *args):
        return list(args)

    def info(self):
        return [self.script.get("protocol", "1.0"), self.script["arch"], BUILD_TYPES]

    def option(self, key, default=None):
        if key in self.attempt_script:
            return self.attempt_script[key]
        return self.script.get(key, default)

    def status(self):
        self._advance()
        misbehave = self.option("misbehave")
        answer = {"builder_status": self.state}
        if self.state == "BuilderStatus.BUILDING":
            answer["build_id"] = "LOST-0" if misbehave == "lose" else self.build_id
            tail = "\n".join(self.log_lines)[-2048:]
            answer["logtail"] = xmlrpc.client.Binary(tail.encode())
        elif self.state == "BuilderStatus.WAITING":
            answer["build_id"] = self.build_id
            answer["build_status"] = "BuildStatus." + self.result
            if self.result in ("OK", "PACKAGEFAIL", "DEPFAIL"):
                answer["filemap"] = dict(self.filemap)
                answer["dependencies"] = "libfoo-dev (>= 2)" if self.result == "DEPFAIL" else ""
        elif self.state == "BuilderStatus.ABORTING":
            answer["build_id"] = self.build_id
        return answer

    def ensurepresent(self, sha1, url, user, password):
        if sha1 in self.cache:
            return [True, "No URL"]
        if not url:
            return [False, "No URL"]
        request = urllib.request.Request(url)
        if user or password:
            token = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
            request.add_header("Authorization", "Basic " + token)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                data = response.read()
        except Exception as error:  # the real builder answers [False, reason] too
            return [False, "Error accessing %s: %s" % (url, error)]
        if hashlib.sha1(data).hexdigest() != sha1:
            return [False, "Digests did not match"]
        self.cache[sha1] = data
        return [True, "Download"]

    def build(self, build_id, build_type, chroot_sha1, filemap, args):
        if self.state != "BuilderStatus.IDLE":
            raise Fault(8002, "error")
        script = self.farm.next_build_script(build_id)
        misbehave = script.get("misbehave", self.script.get("misbehave"))
        if build_type not in BUILD_TYPES or misbehave == "unknownbuilder":
            return ["BuilderStatus.UNKNOWNBUILDER", "%s is not a known build type" % build_type]
        for sha1 in [chroot_sha1] + list(filemap.values()):
            if sha1 not in self.cache or misbehave == "unknownsum":
                return ["BuilderStatus.UNKNOWNSUM", sha1]
        for required in ("series", "arch_tag"):
            if required not in args:
                raise Fault(8002, "error")
        self.state = "BuilderStatus.BUILDING"
        self.build_id = build_id
        self.attempt_script = script
        self.started = time.monotonic()
        self.log_lines = ["Building %s for %s/%s" % (build_id, args["series"], args["arch_tag"])]
        return ["BuilderStatus.BUILDING", build_id]

    def abort(self):
        if self.state != "BuilderStatus.BUILDING":
            raise Fault(8002, "error")
        self.state = "BuilderStatus.ABORTING"
        self.aborted_at = time.monotonic()
        return "BuilderStatus.ABORTING"

    def clean(self):
        if self.state != "BuilderStatus.WAITING":
            raise Fault(8002, "error")
        self.state = "BuilderStatus.IDLE"
        self.attempt_script = {}
        self.build_id = None
        self.result = None
        self.filemap = {}
        return "BuilderStatus.IDLE"

    # -- time passing ---------------------------------------------------------------------------

    def _advance(self):
        now = time.monotonic()
        misbehave = self.option("misbehave")
        if self.state == "BuilderStatus.BUILDING":
            if misbehave == "forget":
                self.state = "BuilderStatus.IDLE"
                self.build_id = None
                self.attempt_script = {}
                return
            if misbehave == "wedge":
                return
            elapsed = now - self.started
            self.log_lines.append("step %.1f" % elapsed)
            if elapsed >= float(self.option("duration", 1)):
                self._finish(self.option("result", "OK"))
        elif self.state == "BuilderStatus.ABORTING":
            if misbehave != "wedge-abort" and now - self.aborted_at >= 0.3:
                self._finish("ABORTED")

    def _finish(self, result):
        self.state = "BuilderStatus.WAITING"
        self.result = result
        self.filemap = {}
        self.log_lines.append("Build finished: %s" % result)
        self.cache["buildlog"] = ("\n".join(self.log_lines) + "\n").encode()
        if result in ("OK", "PACKAGEFAIL", "DEPFAIL"):
            files = self.option("files")
            if files is None:
                files = {"%s_1.0_%s.deb" % (self.build_id.lower(), self.script["arch"]): "a package of " + self.build_id}
            sized = {name: (bytes(range(256)) * (size // 256 + 1))[:size]
                     for name, size in (self.option("file_bytes") or {}).items()}
            for name, data in [(name, text.encode()) for name, text in files.items()] + list(sized.items()):
                sha1 = hashlib.sha1(data).hexdigest()
                if self.option("misbehave") == "bad-sha1":
                    data = data + b" (corrupted)"
                self.cache[sha1] = data
                self.filemap[name] = sha1


class Farm:
    def __init__(self, arch, duration=1.0):
        self.arch = arch
        self.duration = duration
        self.builders = {}
        self.build_scripts = {}

    def builder(self, name):
        if name not in self.builders:
            self.builders[name] = Builder(name, self.arch, self)
            self.builders[name].script["duration"] = self.duration
        return self.builders[name]

    def next_build_script(self, build_id):
        scripts = self.build_scripts.get(build_id) or [{}]
        return scripts.pop(0) if len(scripts) > 1 else scripts[0]


async def read_request(reader):
    line = await reader.readline()
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers = {}
    while True:
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        key, _, value = header.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return method, target, headers, body


def respond(writer, status, body, content_type="text/xml", keep_alive=True):
    reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error", 400: "Bad Request"}.get(status, "OK")
    head = "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n" % (
        status, reason, content_type, len(body), "keep-alive" if keep_alive else "close")
    writer.write(head.encode() + body)


def call_rpc(builder, body):
    params, method = xmlrpc.client.loads(body, use_builtin_types=False)
    builder.calls.append([method] + [p if isinstance(p, (str, int, bool)) else "..." for p in params])
    misbehave = builder.option("misbehave")
    if misbehave == "fault":
        return xmlrpc.client.dumps(xmlrpc.client.Fault(8002, "error"), methodresponse=True)
    if misbehave == "unknown-method" or method not in ("echo", "info", "status", "ensurepresent", "build", "abort", "clean"):
        return xmlrpc.client.dumps(xmlrpc.client.Fault(8001, "method %r is not supported" % method), methodresponse=True)
    try:
        result = getattr(builder, method)(*params)
    except Fault as fault:
        return xmlrpc.client.dumps(xmlrpc.client.Fault(fault.code, fault.message), methodresponse=True)
    except TypeError:
        return xmlrpc.client.dumps(xmlrpc.client.Fault(8002, "error"), methodresponse=True)
    return xmlrpc.client.dumps((result,), methodresponse=True, allow_none=True)


async def handle(farm, reader, writer):
    try:
        while True:
            request = await read_request(reader)
            if request is None:
                break
            method, target, headers, body = request
            keep_alive = headers.get("connection", "").lower() != "close"
            parts = [p for p in target.split("?")[0].split("/") if p]
            if parts == ["control", "_builds"]:
                for cookie, scripts in json.loads(body or b"{}").items():
                    farm.build_scripts[cookie] = scripts if isinstance(scripts, list) else [scripts]
                respond(writer, 200, json.dumps(farm.build_scripts).encode(), "application/json", keep_alive)
            elif len(parts) == 2 and parts[0] == "control":
                builder = farm.builder(parts[1])
                if method == "POST":
                    builder.script.update(json.loads(body or b"{}"))
                answer = {"state": builder.state, "build_id": builder.build_id, "calls": builder.calls,
                          "script": builder.script}
                respond(writer, 200, json.dumps(answer).encode(), "application/json", keep_alive)
            elif len(parts) == 2 and parts[1] == "rpc" and method == "POST":
                builder = farm.builder(parts[0])
                misbehave = builder.option("misbehave")
                if misbehave == "hang":
                    await asyncio.sleep(3600)
                    break
                if misbehave == "garbage":
                    respond(writer, 200, b"<<< this is not XML-RPC >>>", "text/xml", keep_alive)
                elif misbehave == "http500":
                    respond(writer, 500, b"Internal Server Error", "text/plain", keep_alive)
                else:
                    respond(writer, 200, call_rpc(builder, body).encode(), "text/xml", keep_alive)
            elif len(parts) == 3 and parts[1] == "filecache" and method == "GET":
                data = farm.builder(parts[0]).cache.get(parts[2])
                if data is None:
                    respond(writer, 404, b"not in cache", "text/plain", keep_alive)
                else:
                    respond(writer, 200, data, "application/octet-stream", keep_alive)
            else:
                respond(writer, 404, b"no such resource", "text/plain", keep_alive)
            await writer.drain()
            if not keep_alive:
                break
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()


async def main():
    parser = argparse.ArgumentParser(description="launchpad-buildd stand-in for buildd's tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--arch", default="amd64")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds a build runs unless scripted")
    options = parser.parse_args()
    farm = Farm(options.arch, options.duration)
    server = await asyncio.start_server(lambda r, w: handle(farm, r, w), options.host, options.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print("listening on %d" % port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
