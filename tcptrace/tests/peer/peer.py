"""Test peer for tcptrace's privileged tests: one TCP endpoint doing one scripted thing.

usage: peer.py ROLE ADDR PORT [BYTES]
  serve        accept one; read to EOF; send BYTES; close        (peer closes first)
  serve-first  accept one; send BYTES; shutdown; read to EOF; close (we close first)
  hold-server  accept one and keep it open until killed
  send         connect; send BYTES; shutdown; read to EOF; close  (we close first)
  recv         connect; read to EOF; close                        (peer closes first)
  abort        connect; send 1 byte; SO_LINGER 0; close           (RST instead of FIN)
  hold         connect and keep it open until killed
  refused      connect to a closed port; expect ECONNREFUSED
Prints "ready" once listening/connected (flushed) and the byte count received at the end.
"""
import errno
import socket
import struct
import sys
import time

role, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
nbytes = int(sys.argv[4]) if len(sys.argv) > 4 else 0
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET


def drain(s):
    got = 0
    while True:
        try:
            b = s.recv(1 << 16)
        except ConnectionResetError:
            return "reset"
        if not b:
            return got
        got += len(b)


def listener():
    s = socket.socket(fam)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(8)
    print("ready", flush=True)
    c, _ = s.accept()
    return s, c


def client():
    c = socket.create_connection((addr, port), timeout=20)
    print("ready", flush=True)
    return c


if role == "serve":
    s, c = listener()
    got = drain(c)
    if got != "reset":
        c.sendall(b"r" * nbytes)
    c.close()
    print(got, flush=True)
elif role == "serve-first":
    s, c = listener()
    c.sendall(b"s" * nbytes)
    c.shutdown(socket.SHUT_WR)
    got = drain(c)
    c.close()
    print(got, flush=True)
elif role == "hold-server":
    s, c = listener()
    time.sleep(3600)
elif role == "send":
    c = client()
    c.sendall(b"c" * nbytes)
    c.shutdown(socket.SHUT_WR)
    got = drain(c)
    c.close()
    print(got, flush=True)
elif role == "recv":
    c = client()
    got = drain(c)
    c.close()
    print(got, flush=True)
elif role == "abort":
    c = client()
    c.sendall(b"x")
    time.sleep(0.3)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
elif role == "hold":
    c = client()
    time.sleep(3600)
elif role == "refused":
    try:
        socket.create_connection((addr, port), timeout=20)
        sys.exit("connected, expected ECONNREFUSED")
    except OSError as e:
        if e.errno != errno.ECONNREFUSED:
            raise
    print("refused", flush=True)
else:
    sys.exit("unknown role " + role)
