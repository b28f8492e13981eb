"""An FTP server for the BIND tests (Debian's python3-pyftpdlib).

    python3 ftp_server.py ROOT [HOST]

Serves ROOT to anonymous users (read and write) on HOST (127.0.0.1 by
default), port chosen by the kernel. On stdout, one line each, flushed:

    listening PORT
    command PEER VERB          every command, with the control peer
    data PEER                  every data connection, with its far end

For an active-mode (PORT/EPRT) transfer the data connection's far end is
the address the server connected to: the proxy's BIND listener when the
client is proxied. pyftpdlib also refuses a PORT address other than the
control connection's peer, so a client advertising its own address
instead of the proxy's gets an error, never a connection.
"""

import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.servers import FTPServer


def hostport(addr):
    host = "[%s]" % addr[0] if ":" in addr[0] else addr[0]
    return "%s:%d" % (host, addr[1])


class RecordingDTP(DTPHandler):
    def __init__(self, sock, cmd_channel):
        super().__init__(sock, cmd_channel)
        print("data", hostport(sock.getpeername()), flush=True)


class RecordingHandler(FTPHandler):
    dtp_handler = RecordingDTP

    def pre_process_command(self, line, cmd, arg):
        print("command", hostport(self.socket.getpeername()), cmd, flush=True)
        return super().pre_process_command(line, cmd, arg)


def main():
    authorizer = DummyAuthorizer()
    authorizer.add_anonymous(sys.argv[1], perm="elradfmw")
    RecordingHandler.authorizer = authorizer
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    server = FTPServer((host, 0), RecordingHandler)
    print("listening", server.socket.getsockname()[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
