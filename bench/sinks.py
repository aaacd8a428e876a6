#!/usr/bin/env python3
"""Two do-nothing peers for the benchmark, so the app's telemetry and e-mail cost is
paid for real but nothing downstream becomes the bottleneck:

- an OTLP/HTTP receiver: accepts POST /v1/traces, answers 200 with an empty
  ExportTraceServiceResponse (zero bytes of protobuf);
- an SMTP server: accepts every message and throws it away.

Usage: sinks.py OTLP_PORT SMTP_PORT   (runs until killed)
"""
import asyncio
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class OtlpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # One buffer for the connection's batches, not a new bytes object per batch: a
        # batch of spans is ~100 KiB, where glibc maps and unmaps memory.
        self.scratch = memoryview(bytearray(256 * 1024))

    def do_POST(self):
        remaining = int(self.headers.get("Content-Length", "0"))
        while remaining > 0:
            got = self.rfile.readinto(self.scratch[:remaining])
            if not got:
                break
            remaining -= got
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class SmtpSink(asyncio.BufferedProtocol):
    """A bare asyncio protocol (not streams): the sink must cost far less CPU than the
    app it serves, or it would skew the checkout figures on a small machine. Buffered:
    a plain Protocol gets each read in a new 256 KiB bytes object, which glibc maps,
    shrinks and unmaps — three system calls per SMTP command; here every read lands
    in one buffer kept for the connection."""

    def connection_made(self, transport):
        self.transport = transport
        self.read_buffer = bytearray(64 * 1024)
        self.buffer = b""
        self.in_data = False
        transport.write(b"220 sink ESMTP\r\n")

    def get_buffer(self, sizehint):
        return self.read_buffer

    def buffer_updated(self, nbytes):
        self.data_received(bytes(memoryview(self.read_buffer)[:nbytes]))

    def data_received(self, data):
        self.buffer += data
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    # keep only what could be the start of the terminator
                    self.buffer = self.buffer[-4:]
                    return
                self.buffer = self.buffer[end + 5:]
                self.in_data = False
                self.transport.write(b"250 OK\r\n")
                continue
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                return
            verb = self.buffer[:4].upper()
            self.buffer = self.buffer[line_end + 2:]
            if verb == b"DATA":
                self.in_data = True
                # the terminator may follow DATA's body directly: search from here
                self.buffer = b"\r\n" + self.buffer
                self.transport.write(b"354 go on\r\n")
            elif verb == b"QUIT":
                self.transport.write(b"221 bye\r\n")
                self.transport.close()
                return
            elif verb in (b"EHLO", b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                self.transport.write(b"250 OK\r\n")
            else:
                self.transport.write(b"502 not implemented\r\n")


async def main(otlp_port, smtp_port):
    http = ThreadingHTTPServer(("127.0.0.1", otlp_port), OtlpHandler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    server = await asyncio.get_running_loop().create_server(SmtpSink, "127.0.0.1", smtp_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
