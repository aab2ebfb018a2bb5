"""Socket activation as systemd does it, for tests/it/ops.rs: binds and listens on the
Unix socket PATH, passes it as fd 3 with LISTEN_FDS=1, LISTEN_PID (this process, which
exec keeps) and LISTEN_FDNAMES=prefsd, then execs COMMAND.

usage: activate.py PATH COMMAND [ARG...]"""
import os
import socket
import sys

path, command = sys.argv[1], sys.argv[2:]
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen(128)
if listener.fileno() != 3:
    os.dup2(listener.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDNAMES"] = "prefsd"
os.execv(command[0], command)
