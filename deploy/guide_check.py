#!/usr/bin/env python3
"""Checks the deploy guide's files as the packages installed them in a root, before a farm is started from them.

    guide_check.py ROOT CHECKOUT

- systemd-analyze verify --root=ROOT on every shipped unit: no warning at all is accepted;
- every command line in the units (ExecStart=, ExecStartPre=) and every `buildd-master ...` command in
  docs/deploy.md names subcommands and flags the installed binaries have (their --help);
- every setting in master.env is one buildd-master reads (named in its --help), and every setting
  the code reads (BUILDD_* in MasterSettings) is in master.env.

Prints one line per check and exits 1 when any fails.
"""
import os
import re
import subprocess
import sys

root, checkout = sys.argv[1], sys.argv[2]
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def run(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


help_cache = {}


def help_text(binary, path):
    key = (binary, tuple(path))
    if key not in help_cache:
        result = run([binary] + path + ["--help"])
        help_cache[key] = (result.returncode, result.stdout + result.stderr)
    return help_cache[key]


def command_path(binary, words):
    """The subcommand path at the start of `words` (one or two levels, as --help shows them)."""
    path = []
    for word in words:
        if word.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        status, text = help_text(binary, path + [word])
        if status != 0 or "USAGE:" not in text:
            break
        path.append(word)
        if "SUBCOMMANDS:" not in text:
            break
    return path


def check_command(line, where):
    words = line.split()
    binary = words[0]
    if binary.startswith("/usr/bin/"):
        binary = os.path.join(root, binary.lstrip("/"))
    path = command_path(binary, words[1:])
    status, text = help_text(binary, path)
    name = os.path.basename(binary) + " " + " ".join(path)
    if not path or "SUBCOMMANDS:" in text:
        check(False, f"{where}: `{line}` names no runnable subcommand")
        return
    flags = [w.split("=")[0] for w in words[1 + len(path):] if w.startswith("--")]
    missing = [f for f in flags if not re.search(r"(^|[\s,\[])" + re.escape(f) + r"([\s=,\]<]|$)", text)]
    check(not missing, f"{where}: `{name.strip()}` has {', '.join(flags) or 'no flags'}"
          + (f" (missing: {', '.join(missing)})" if missing else ""))


# 1. The units, as systemd reads them.
unit_dir = os.path.join(root, "lib/systemd/system")
units = sorted(os.path.join(unit_dir, f) for f in os.listdir(unit_dir) if f.startswith("buildd-") and f.endswith(".service"))
check(len(units) == 2, f"two units installed ({', '.join(os.path.basename(u) for u in units)})")
verify = run(["systemd-analyze", "verify", "--root=" + root] + units)
said = (verify.stdout + verify.stderr).strip()
check(verify.returncode == 0 and not said, "systemd-analyze verify: " + (said or "clean"))

# 2. Their command lines and the guide's commands against the binaries' --help.
for unit in units:
    for line in open(unit):
        match = re.match(r"(ExecStart|ExecStartPre)=[-@:+!]*(.*)", line.strip())
        if match:
            check_command(match.group(2), os.path.basename(unit))
guide = open(os.path.join(checkout, "docs/deploy.md")).read()
commands = set()
for match in re.finditer(r"(?m)(?:^|`)(buildd-master [^`\n#]+)", guide):
    commands.add(match.group(1).strip())
check(len(commands) >= 5, f"{len(commands)} buildd-master commands found in docs/deploy.md")
for command in sorted(commands):
    check_command("/usr/bin/" + command, "docs/deploy.md")

# 3. master.env against what the master reads.
master = os.path.join(root, "usr/bin/buildd-master")
top_help = help_text(master, [])[1]
env_keys = [line.split("=", 1)[0].strip() for line in open(os.path.join(root, "etc/buildd/master.env"))
            if "=" in line and not line.lstrip().startswith("#")]
for key in env_keys:
    check(key in top_help, f"master.env: {key} is read by buildd-master (its --help names it)")
read_by_code = set(re.findall(r'"(BUILDD_[A-Z_]+)"', open(os.path.join(
    checkout, "Sources/Master/buildd-master/MasterSettings.swift")).read()
    + open(os.path.join(checkout, "Sources/Master/buildd-master/BuilddMasterCommand.swift")).read()
    + open(os.path.join(checkout, "Sources/Master/buildd-master/Serve.swift")).read()))
read_by_code.discard("BUILDD_CONFIG")
check(read_by_code <= set(env_keys),
      f"master.env sets every setting the master reads ({', '.join(sorted(read_by_code - set(env_keys))) or 'all'}"
      + (" missing)" if read_by_code - set(env_keys) else ")"))

print(f"guide files: {len(failures)} failed")
sys.exit(1 if failures else 0)
