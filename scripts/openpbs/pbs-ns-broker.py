#!/usr/bin/python3
# Copied from ../shared/openpbs/pbs-ns-broker.py (the recipe shared with this project).
"""Run whitelisted OpenPBS client commands inside the PBS network namespace for any local user.

  pbs-ns-broker.py serve SOCKET BINDIR   (root; started by start-openpbs.sh via `ip netns exec`,
                                         so it and every command it runs live in the namespace)
  pbs-ns-broker.py call  SOCKET CMD ARGS (any user; used by the wrappers in $PBS_CLIENT_DIR)

The caller passes its stdin/stdout/stderr file descriptors (SCM_RIGHTS), argv, environment and
cwd over a Unix socket (a filesystem socket works across network namespaces). The broker takes the
caller's uid/gid from the kernel (SO_PEERCRED), never from the message, forks, drops to that
uid/gid and its supplementary groups, chdirs to the cwd *as that user*, and execs BINDIR/CMD.
It sends back the exit status (128+N if killed by signal N). No setuid bit, no sudo rule.
"""
import json, os, pwd, signal, socket, struct, sys

ALLOWED = {"qsub", "qstat", "qdel", "qhold", "qrls", "qalter", "qmgr", "pbsnodes", "qsig",
           "tracejob", "qselect", "qrun", "qrerun", "qmove", "qmsg", "qorder", "qterm"}
MAXMSG = 4 << 20


def serve(path, bindir):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o666)
    srv.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # auto-reap per-connection handlers
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    while True:
        try:
            conn, _ = srv.accept()
        except InterruptedError:
            continue
        if os.fork() == 0:
            srv.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            try:
                handle(conn, bindir)
            finally:
                os._exit(0)
        conn.close()


def handle(conn, bindir):
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
    data, fds, _, _ = socket.recv_fds(conn, 65536, 3)
    if len(fds) != 3 or len(data) < 4:
        return
    n = struct.unpack("!I", data[:4])[0]
    if n > MAXMSG:
        return
    buf = data[4:]
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return
        buf += chunk
    req = json.loads(buf)
    cmd, argv, env, cwd = req["cmd"], req["argv"], req["env"], req["cwd"]

    def fail(msg, rc):
        os.write(fds[2], ("pbs-ns-broker: %s\n" % msg).encode())
        conn.sendall(struct.pack("!i", rc))

    if cmd not in ALLOWED or "/" in cmd:
        return fail("command not allowed: %r" % cmd, 127)
    exe = os.path.join(bindir, cmd)
    child = os.fork()
    if child == 0:
        try:
            for i, fd in enumerate(fds):
                os.dup2(fd, i)
            # close the received originals: qsub's background daemon would otherwise keep the
            # caller's stdout pipe open and `$(qsub ...)` would hang until the daemon exits
            for fd in set(fds):
                if fd > 2:
                    os.close(fd)
            try:
                name = pwd.getpwuid(uid).pw_name
                groups = os.getgrouplist(name, gid)
            except KeyError:
                groups = [gid]
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            try:
                os.chdir(cwd)
            except OSError as e:
                os.write(2, ("pbs-ns-broker: cannot chdir to %s: %s\n" % (cwd, e)).encode())
                os._exit(126)
            os.execve(exe, [cmd] + argv, env)
        except BaseException as e:  # noqa
            try:
                os.write(2, ("pbs-ns-broker: exec %s failed: %s\n" % (exe, e)).encode())
            finally:
                os._exit(127)
    for fd in fds:
        os.close(fd)
    _, st = os.waitpid(child, 0)
    rc = os.waitstatus_to_exitcode(st)
    conn.sendall(struct.pack("!i", rc if rc >= 0 else 128 - rc))


def call(path, cmd, argv):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        sys.stderr.write("%s: OpenPBS client broker not reachable at %s (%s); is start-openpbs.sh running?\n"
                         % (cmd, path, e.strerror))
        return 1
    fds = []
    for i in range(3):
        try:
            os.fstat(i)
            fds.append(i)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR))
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = "/"
    msg = json.dumps({"cmd": cmd, "argv": argv, "env": dict(os.environ), "cwd": cwd}).encode()
    socket.send_fds(s, [struct.pack("!I", len(msg)) + msg[:60000]], fds)
    if len(msg) > 60000:
        s.sendall(msg[60000:])
    # ignore SIGINT/SIGTERM-less niceties: the command runs in the broker; wait for its status
    buf = b""
    while len(buf) < 4:
        chunk = s.recv(4 - len(buf))
        if not chunk:
            sys.stderr.write("%s: OpenPBS client broker closed the connection\n" % cmd)
            return 1
        buf += chunk
    return struct.unpack("!i", buf)[0]


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "call":
        sys.exit(call(sys.argv[2], sys.argv[3], sys.argv[4:]))
    else:
        sys.exit(__doc__)
