"""A STUN/TURN client for the tests, written from RFC 8489 and RFC 8656 (not a library): one
request, one line of key=value pairs on stdout.

  binding udp|tcp|tls HOST PORT [CAFILE]
      A Binding request: mapped=IP:PORT (its XOR-MAPPED-ADDRESS) local=IP:PORT; over TLS the
      certificate is checked against CAFILE for HOST.
  allocate udp|tcp|tls HOST PORT [CAFILE]
      An Allocate with the credentials in TURN_USERNAME and TURN_PASSWORD (never on the command
      line): first without them (the 401 brings realm and nonce), then with the long-term
      credential's MESSAGE-INTEGRITY. result=success relayed=IP:PORT [mapped=IP:PORT]
      lifetime=N realm=R (and the allocation is released), or result=error code=N.
"""
import hashlib, hmac, os, socket, ssl, struct, sys

MAGIC = 0x2112A442


def message(mtype, tid, attrs, key=None):
    body = b''
    for t, v in attrs:
        body += struct.pack('!HH', t, len(v)) + v + b'\0' * (-len(v) % 4)
    if key is not None:
        head = struct.pack('!HHI', mtype, len(body) + 24, MAGIC) + tid
        body += struct.pack('!HH', 0x0008, 20) + hmac.new(key, head + body, hashlib.sha1).digest()
    return struct.pack('!HHI', mtype, len(body), MAGIC) + tid + body


def parse(data, tid):
    mtype, length, magic = struct.unpack('!HHI', data[:8])
    assert magic == MAGIC and data[8:20] == tid, 'not our transaction'
    attrs, i = {}, 20
    while i + 4 <= 20 + length:
        t, l = struct.unpack('!HH', data[i:i + 4])
        attrs.setdefault(t, data[i + 4:i + 4 + l])
        i += 4 + l + (-l % 4)
    return mtype, attrs


def xor_addr(v):
    port = struct.unpack('!H', v[2:4])[0] ^ (MAGIC >> 16)
    ip = socket.inet_ntoa(struct.pack('!I', struct.unpack('!I', v[4:8])[0] ^ MAGIC))
    return '%s:%d' % (ip, port)


def connect(proto, host, port, cafile):
    """A socket to the server and a function that runs one transaction on it."""
    if proto == 'udp':
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.5)
        s.bind(('0.0.0.0', 0))

        def transaction(msg):
            for _ in range(6):
                s.sendto(msg, (host, port))
                try:
                    return s.recvfrom(4096)[0]
                except socket.timeout:
                    pass
            raise SystemExit('no answer from %s:%d' % (host, port))
        return s, transaction
    s = socket.create_connection((host, port), timeout=5)
    if proto == 'tls':
        s = ssl.create_default_context(cafile=cafile).wrap_socket(s, server_hostname=host)

    def transaction(msg):
        s.sendall(msg)
        data = b''
        while len(data) < 20 or len(data) < 20 + struct.unpack('!H', data[2:4])[0]:
            chunk = s.recv(4096)
            assert chunk, 'connection closed'
            data += chunk
        return data
    return s, transaction


def main():
    cmd, proto, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    cafile = sys.argv[5] if len(sys.argv) > 5 else None
    s, transaction = connect(proto, host, port, cafile)
    if cmd == 'binding':
        tid = os.urandom(12)
        mtype, attrs = parse(transaction(message(0x0001, tid, [])), tid)
        assert mtype == 0x0101, 'binding answered with type %#x' % mtype
        if proto == 'udp':
            s.connect((host, port))  # so that getsockname names the local address, not 0.0.0.0
        print('mapped=%s local=%s:%d' % (xor_addr(attrs[0x0020]), *s.getsockname()[:2]))
        return
    assert cmd == 'allocate', 'binding or allocate, not %r' % cmd
    user, password = os.environ['TURN_USERNAME'], os.environ['TURN_PASSWORD']
    udp_relay = [(0x0019, bytes([17, 0, 0, 0]))]
    tid = os.urandom(12)
    mtype, attrs = parse(transaction(message(0x0003, tid, udp_relay)), tid)
    assert mtype == 0x0113, 'unauthenticated allocate answered with type %#x' % mtype
    realm, nonce = attrs[0x0014], attrs[0x0015]
    key = hashlib.md5(b'%s:%s:%s' % (user.encode(), realm, password.encode())).digest()
    tid = os.urandom(12)
    auth = [(0x0006, user.encode()), (0x0014, realm), (0x0015, nonce)] + udp_relay
    mtype, attrs = parse(transaction(message(0x0003, tid, auth, key)), tid)
    if mtype != 0x0103:
        e = attrs.get(0x0009, b'\0\0\0\0')
        print('result=error code=%d' % ((e[2] & 7) * 100 + e[3]))
        return
    lifetime = struct.unpack('!I', attrs[0x000D])[0]
    mapped = ' mapped=%s' % xor_addr(attrs[0x0020]) if 0x0020 in attrs else ''
    print('result=success relayed=%s%s lifetime=%d realm=%s'
          % (xor_addr(attrs[0x0016]), mapped, lifetime, realm.decode()))
    tid = os.urandom(12)
    release = [(0x0006, user.encode()), (0x0014, realm), (0x0015, nonce), (0x000D, struct.pack('!I', 0))]
    transaction(message(0x0004, tid, release, key))


if __name__ == '__main__':
    main()
