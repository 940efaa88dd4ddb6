#!/usr/bin/env python3
"""Checks a real-build fault-injection run (deploy/localfarm chaos --real).

Fails unless every build ended as its package says (hello FULLYBUILT with hello's .deb, whose bytes match the
digest the master recorded; the failing package FAILEDTOBUILD from its own failure; the dep-wait package
MANUALDEPWAIT naming the missing relation), every kind of fault happened with its effect checked (an agent
killed while dpkg-buildpackage ran, a master killed, the broker restarted, the database crashed), and each
agent's machine is clean and its chroot cache intact once the agents stopped: no build folder, no mount under
its folder, no process rooted or working in it, no namespace the run made, the cached tarball's SHA-256 equal
to its name and to the registered chroot's, and the tree the builds' overlays share equal to the tarball's
content (type, mode, owner, link target and SHA-256 of each file)."""

import argparse
import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest(top, skip=()):
    """path -> (type, mode, uid, gid, content) for every entry under TOP; content is a regular file's SHA-256,
    a link's target or a device's number."""
    entries = {}
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, top)
            if relative in skip:
                continue
            info = os.lstat(path)
            mode = info.st_mode
            if stat.S_ISREG(mode):
                content = sha256_of(path)
            elif stat.S_ISLNK(mode):
                content = os.readlink(path)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                content = "%d,%d" % (os.major(info.st_rdev), os.minor(info.st_rdev))
            else:
                content = ""
            entries[relative] = (stat.S_IFMT(mode), stat.S_IMODE(mode), info.st_uid, info.st_gid, content)
        # os.walk does not descend into links to folders: they are recorded as links above.
    return entries


def show(master, build_id):
    out = subprocess.run([master, "build", "show", str(build_id), "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit("chaos --real: build show %s failed: %s" % (build_id, out.stderr))
    return json.loads(out.stdout)


def store_path(artifacts, sha256):
    return os.path.join(artifacts, "sha256", sha256[:2], sha256)


def check_build(kind, detail, artifacts):
    """The problems with one build's end, or []."""
    build = detail["build"]
    status = build["status"]
    problems = []
    if kind == "hello":
        if status != "FULLYBUILT":
            return ["ended %s, not FULLYBUILT" % status]
        debs = [f for f in detail["files"] if f["kind"] == "result" and f["name"].startswith("hello_")
                and f["name"].endswith(".deb") and f["attempt"] == build["attempt"]]
        if not debs:
            return ["FULLYBUILT without hello's .deb of attempt %d" % build["attempt"]]
        deb = debs[0]
        path = store_path(artifacts, deb["sha256"])
        if not os.path.exists(path):
            return ["%s not in the artifact store" % deb["name"]]
        if sha256_of(path) != deb["sha256"] or os.path.getsize(path) != deb["size"]:
            problems.append("%s does not match its recorded SHA-256 or size" % deb["name"])
        info = subprocess.run(["dpkg-deb", "--field", path, "Package"], capture_output=True, text=True)
        if info.stdout.strip() != "hello":
            problems.append("%s is not a package of hello: %r" % (deb["name"], info.stdout + info.stderr))
        contents = subprocess.run(["dpkg-deb", "--contents", path], capture_output=True, text=True).stdout
        if "./usr/bin/hello" not in contents:
            problems.append("%s holds no /usr/bin/hello" % deb["name"])
    elif kind == "fails":
        if status != "FAILEDTOBUILD":
            return ["ended %s, not FAILEDTOBUILD" % status]
        # From the package's own failure, not from three failures of the farm.
        if build.get("result") != "PACKAGEFAIL":
            problems.append("FAILEDTOBUILD with result %s, not PACKAGEFAIL" % build.get("result"))
    elif kind == "depwait":
        if status != "MANUALDEPWAIT":
            return ["ended %s, not MANUALDEPWAIT" % status]
        if not any("buildd-no-such-package (>= 1.0)" in (e.get("message") or "") for e in detail["history"]):
            problems.append("the missing relation is not in its history")
    return problems


def mounts_under(folder):
    with open("/proc/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(folder + "/") or line.split()[1] == folder]


def processes_in(folder):
    """pid -> command of the processes whose root or working folder is under FOLDER."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for link in ("root", "cwd"):
            try:
                target = os.readlink("/proc/%s/%s" % (entry, link))
            except OSError:
                continue
            if target == folder or target.startswith(folder + "/"):
                try:
                    with open("/proc/%s/cmdline" % entry, "rb") as f:
                        found[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                except OSError:
                    found[int(entry)] = "?"
    return found


def of_the_run(pid, run_dir):
    """Whether process PID is this run's: its working folder or root is in the run's folder, or its command line or
    environment names that folder (another job on the machine, a second checkout's tests, is not)."""
    for link in ("cwd", "root"):
        try:
            target = os.readlink("/proc/%s/%s" % (pid, link))
        except OSError:
            continue
        if target == run_dir or target.startswith(run_dir + "/"):
            return True
    for name in ("cmdline", "environ"):
        try:
            with open("/proc/%s/%s" % (pid, name), "rb") as f:
                if run_dir.encode() in f.read():
                    return True
        except OSError:
            continue
    return False


def new_namespaces(before_file, run_dir):
    """The namespaces that did not exist before the run and hold a process of the run."""
    with open(before_file) as f:
        before = set(line.strip() for line in f if line.strip())
    out = subprocess.run(["lsns", "-n", "-o", "NS,TYPE,PID,COMMAND"], capture_output=True, text=True).stdout
    left = []
    for line in out.splitlines():
        fields = line.split(None, 3)
        if len(fields) >= 3 and fields[0] not in before and of_the_run(fields[2], run_dir):
            left.append(line.strip())
    return left


def main():
    parser = argparse.ArgumentParser(description="Check a real-build fault-injection run.")
    parser.add_argument("--dir", required=True, help="the run's folder (builds, faults.log, namespaces-before)")
    parser.add_argument("--master", required=True, help="the buildd-master binary (build show --json)")
    parser.add_argument("--artifacts", required=True, help="the masters' artifact store")
    parser.add_argument("--chroot", required=True, help="the chroot tarball registered for the arch series")
    parser.add_argument("--agent-work", action="append", default=[], help="an agent's work folder (repeatable)")
    args = parser.parse_args()

    with open(os.path.join(args.dir, "builds")) as f:
        builds = [(int(line.split()[0]), line.split()[1]) for line in f if line.strip()]
    with open(os.path.join(args.dir, "faults.log")) as f:
        faults = [line.split(" ", 1)[1].strip() for line in f if " " in line]

    failures = []
    by_kind = {}
    attempts = {}
    wrong = []
    for build_id, kind in builds:
        detail = show(args.master, build_id)
        attempts[build_id] = detail["build"]["attempt"]
        problems = check_build(kind, detail, args.artifacts)
        ok_count, total = by_kind.get(kind, (0, 0))
        by_kind[kind] = (ok_count + (0 if problems else 1), total + 1)
        for problem in problems:
            wrong.append("build %d (%s): %s" % (build_id, kind, problem))
    failures += wrong

    killed_mid_build = [what for what in faults if what.startswith("kill agent ") and "mid-dpkg-buildpackage" in what
                        and "gone)" in what]
    interrupted = sorted({int(what.split("build-")[1].split("-")[0]) for what in killed_mid_build})
    interrupted_retried = [b for b in interrupted if attempts.get(b, 0) >= 2]
    counts = {
        "agents killed while dpkg-buildpackage ran": len(killed_mid_build),
        "masters killed": sum(1 for what in faults if what.startswith("kill master ") and "gone)" in what),
        "broker restarts": sum(1 for what in faults if what.startswith("broker back")),
        "database crashes": sum(1 for what in faults if what.startswith("database back")),
    }
    failed_faults = [what for what in faults if what.startswith("FAILED")]
    for what, n in counts.items():
        if n == 0:
            failures.append("no fault of its kind happened with its effect checked: %s" % what)
    failures += ["a fault did not have its effect: %s" % what for what in failed_faults]
    # A build interrupted mid-dpkg-buildpackage must have been run again (the attempt that was killed cannot
    # have ended it).
    for build_id in interrupted:
        if build_id not in interrupted_retried:
            failures.append("build %d was interrupted mid-dpkg-buildpackage but ended at attempt %d"
                            % (build_id, attempts.get(build_id, 0)))

    # Each build machine after the run.
    machine_rows = []
    registered = sha256_of(args.chroot)
    pristine = None
    for work in args.agent_work:
        name = os.path.basename(work)
        folders = [e for e in os.listdir(work) if e.startswith("build-")] if os.path.isdir(work) else []
        mounts = mounts_under(work)
        processes = processes_in(work)
        cache = os.path.join(work, "chroots")
        tarballs = [e for e in os.listdir(cache) if e.endswith(".tar.zst")] if os.path.isdir(cache) else []
        cache_problems = []
        if not tarballs:
            cache_problems.append("no cached chroot")
        for tarball in tarballs:
            actual = sha256_of(os.path.join(cache, tarball))
            if not tarball.startswith(actual + "-") or actual != registered:
                cache_problems.append("%s: SHA-256 %s" % (tarball, actual))
            tree = os.path.join(cache, tarball + ".root")
            if not os.path.isdir(tree):
                continue  # never unpacked (no build ran there), nothing to compare
            if pristine is None:
                scratch = tempfile.mkdtemp(prefix="chaos-real-chroot-")
                subprocess.run(["tar", "-xf", args.chroot, "-C", scratch], check=True)
                pristine = manifest(scratch)
                subprocess.run(["rm", "-rf", scratch], check=True)
            cached = manifest(tree, skip={".buildd-complete"})
            if cached != pristine:
                changed = sorted(k for k in set(cached) | set(pristine) if cached.get(k) != pristine.get(k))
                cache_problems.append("%s.root differs from the tarball in %d entries, e.g. %s"
                                      % (tarball, len(changed), ", ".join(changed[:5])))
        machine_rows.append((name, len(folders), len(mounts), len(processes), "ok" if not cache_problems else "NO"))
        if folders:
            failures.append("%s: build folders left: %s" % (name, ", ".join(sorted(folders))))
        if mounts:
            failures.append("%s: mounts left: %s" % (name, ", ".join(mounts)))
        if processes:
            failures.append("%s: processes left: %s" % (name, "; ".join("%d %s" % p for p in processes.items())))
        failures += ["%s: chroot cache: %s" % (name, p) for p in cache_problems]
    namespaces = new_namespaces(os.path.join(args.dir, "namespaces-before"), os.path.realpath(args.dir))
    failures += ["a namespace the run made is left: %s" % line for line in namespaces]

    print("| builds | ended as their package says |")
    print("|---|---|")
    for kind in sorted(by_kind):
        ok_count, total = by_kind[kind]
        print("| %s | %d of %d |" % (kind, ok_count, total))
    print()
    print("| faults | count |")
    print("|---|---|")
    for what, n in counts.items():
        print("| %s | %d |" % (what, n))
    print("| builds interrupted mid-dpkg-buildpackage, each run again to its right end | %d of %d |"
          % (len([b for b in interrupted_retried if not any(w.startswith("build %d " % b) for w in wrong)]),
             len(interrupted)))
    print("| faults whose effect failed | %d |" % len(failed_faults))
    print()
    print("| agent | build folders left | mounts left | processes left | chroot cache intact |")
    print("|---|---|---|---|---|")
    for row in machine_rows:
        print("| %s | %d | %d | %d | %s |" % row)
    print()
    print("namespaces the run made that are left: %d" % len(namespaces))
    print()
    for failure in failures:
        print("chaos --real: " + failure)
    print("chaos --real: " + ("PASS" if not failures else "FAIL"))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
