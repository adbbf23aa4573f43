"""A static HTTPS file server that is not fedgw (Python's http.server and ssl), for the
netns testbed's foreign bundle endpoint: serves DIR over TLS with CERT and KEY on
HOST:PORT and writes one access-log line per request to standard error:

    https_server: <unix time> <client address> "<request line>" <status>

A client whose address has a directory DIR/by-client/<address>/ is served from it
instead (the fencing scenario shows one replica another bundle).

    https_server.py HOST PORT CERT KEY DIR
"""

import functools
import http.server
import os
import ssl
import sys
import time


class Handler(http.server.SimpleHTTPRequestHandler):
    def translate_path(self, path):
        own = os.path.join(self.directory, "by-client", self.client_address[0])
        if os.path.isdir(own):
            return self._translate_in(own, path)
        return super().translate_path(path)

    def _translate_in(self, root, path):
        saved = self.directory
        self.directory = root
        try:
            return super().translate_path(path)
        finally:
            self.directory = saved

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def log_request(self, code="-", size="-"):
        sys.stderr.write(
            "https_server: %.3f %s \"%s\" %s\n"
            % (time.time(), self.client_address[0], self.requestline, code)
        )
        sys.stderr.flush()


def main() -> None:
    host, port, cert, key, directory = (
        sys.argv[1],
        int(sys.argv[2]),
        sys.argv[3],
        sys.argv[4],
        sys.argv[5],
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handler = functools.partial(Handler, directory=directory)
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
