"""Raw-protocol checks of ApiVersions (KIP-511), the handshake every client does
first: flexible v3 answered with response header v0, and an unsupported version
answered with UNSUPPORTED_VERSION in the v0 body, listing ApiVersions' own range."""
import socket
import struct

from e2e_util import api_versions


def uvarint(b, i):
    shift = result = 0
    while True:
        byte = b[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def compact_str(s: bytes) -> bytes:
    return bytes([len(s) + 1]) + s


def send_recv(port, api_key, version, body, flexible_header, corr=7):
    hdr = struct.pack(">hhih", api_key, version, corr, 10) + b"strata-e2e"
    if flexible_header:
        hdr += b"\x00"  # request header v2: empty tagged fields
    msg = hdr + body
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(5)
        s.sendall(struct.pack(">i", len(msg)) + msg)
        buf = b""
        while len(buf) < 4:
            chunk = s.recv(4 - len(buf))
            assert chunk, "broker closed the connection without answering (see its log)"
            buf += chunk
        (size,) = struct.unpack(">i", buf)
        data = b""
        while len(data) < size:
            chunk = s.recv(size - len(data))
            assert chunk, "broker closed the connection mid-response"
            data += chunk
    (got_corr,) = struct.unpack(">i", data[:4])
    assert got_corr == corr
    return data[4:]


def test_api_versions_v0(broker):
    versions = api_versions("127.0.0.1", broker.port)
    for key in (0, 1, 2, 3, 18, 19, 20):  # Produce Fetch ListOffsets Metadata ApiVersions Create/DeleteTopics
        assert key in versions, f"api key {key} not advertised: {sorted(versions)}"
        lo, hi = versions[key]
        assert 0 <= lo <= hi, (key, lo, hi)
    assert versions[18][1] >= 3, f"ApiVersions max {versions[18]}: flexible v3 expected"


def test_api_versions_v3_uses_response_header_v0(broker):
    body = compact_str(b"strata-e2e") + compact_str(b"1.0") + b"\x00"
    b = send_recv(broker.port, 18, 3, body, flexible_header=True)
    # response header v0: the body starts right after the correlation id (no tag buffer)
    (err,) = struct.unpack_from(">h", b, 0)
    assert err == 0, f"error_code {err} (a leading tagged-field byte would shift this)"
    n, i = uvarint(b, 2)
    n -= 1
    assert 10 <= n <= 200, f"implausible api_keys count {n}"
    keys = {}
    for _ in range(n):
        k, lo, hi = struct.unpack_from(">hhh", b, i)
        i += 6
        tags, i = uvarint(b, i)
        assert tags == 0, f"api key {k}: unexpected tagged fields"
        keys[k] = (lo, hi)
    assert 18 in keys and keys[18][1] >= 3
    i += 4  # throttle_time_ms
    ntags, i = uvarint(b, i)
    tags = {}
    for _ in range(ntags):
        tag, i = uvarint(b, i)
        size, i = uvarint(b, i)
        tags[tag] = b[i:i + size]
        i += size
    assert i == len(b), f"{len(b) - i} trailing bytes after the ApiVersions v3 body"
    # A tagged field holding its default must not be written: librdkafka < 2.2
    # (kcat on Debian) mis-skips them ("Read underflow").
    defaults = {0: b"\x01",  # SupportedFeatures: empty compact array
                1: struct.pack(">q", -1),  # FinalizedFeaturesEpoch
                2: b"\x01",  # FinalizedFeatures: empty
                3: b"\x00"}  # ZkMigrationReady: false
    written_defaults = {t: v.hex() for t, v in tags.items() if defaults.get(t) == v}
    assert not written_defaults, f"ApiVersions v3 writes default-valued tagged fields {written_defaults}"


def test_api_versions_unsupported_version(broker):
    b = send_recv(broker.port, 18, 127, b"\x00\x00\x00", flexible_header=True)
    err, n = struct.unpack_from(">hi", b, 0)
    assert err == 35, f"error_code {err}, expected UNSUPPORTED_VERSION (35)"
    entries = [struct.unpack_from(">hhh", b, 6 + 6 * j) for j in range(n)]
    assert any(k == 18 for k, _, _ in entries), f"ApiVersions' own range missing: {entries}"


def test_metadata_v12_all_topics_as_librdkafka_sends_it(broker):
    """librdkafka 2.x (confluent-kafka's AdminClient.list_topics(), consumers) sends an
    all-topics Metadata v9+ request with the topics count left as a 4-byte placeholder
    (00 00 00 00), i.e. 3 bytes more than the schema. Apache Kafka ignores the
    surplus; a broker that rejects it breaks list_topics() for every librdkafka client.
    These are the exact bytes librdkafka 2.16 sent (after the request header)."""
    body = bytes.fromhex("00000000" "01" "00" "00")
    b = send_recv(broker.port, 3, 12, body, flexible_header=True)
    i = 0
    ntags, i = uvarint(b, i)  # response header v1 tagged fields
    assert ntags == 0
    i += 4  # throttle_time_ms
    nbrokers, i = uvarint(b, i)
    assert nbrokers - 1 == 1, f"expected 1 broker, got {nbrokers - 1}"
    (node_id,) = struct.unpack_from(">i", b, i)
    assert node_id == 1
