"""Hand-built frames on raw sockets: bad input closes (or is answered on) the one
connection it came on, never takes the broker down, and never stops a normal client
on another connection. Plus a by-hand ApiVersions exchange, the first thing every
client sends.

Kafka framing: every request and response is an i32 big-endian size followed by that
many bytes. Request header v1 = api_key i16, api_version i16, correlation_id i32,
client_id (i16 length, -1 for null, then bytes). Header v2 (flexible versions) adds
a tagged-field section (an unsigned varint count, 0 here) after client_id.
"""

from __future__ import annotations

import socket
import struct

import pytest

from caudal_harness import HOST, assert_clients_work

API_PRODUCE, API_FETCH, API_METADATA, API_API_VERSIONS = 0, 1, 3, 18
UNSUPPORTED_VERSION = 35
ANSWER_TIMEOUT_S = 5.0


# --------------------------------------------------------------------------------------
# Raw protocol helpers
# --------------------------------------------------------------------------------------


def request_header(api_key: int, api_version: int, correlation_id: int, client_id: str | None,
                   flexible: bool = False) -> bytes:
    """Request header v1, or v2 (with an empty tagged-field section) when `flexible`."""
    if client_id is None:
        cid = struct.pack(">h", -1)
    else:
        raw = client_id.encode()
        cid = struct.pack(">h", len(raw)) + raw
    header = struct.pack(">hhi", api_key, api_version, correlation_id) + cid
    return header + (b"\x00" if flexible else b"")


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def connect(port: int) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=ANSWER_TIMEOUT_S)
    s.settimeout(ANSWER_TIMEOUT_S)
    return s


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """n bytes, or EOFError if the peer closes first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_response(sock: socket.socket) -> bytes:
    """One response frame's payload (without its size prefix)."""
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    assert 0 <= size < 1 << 20, f"implausible response size {size}"
    return recv_exact(sock, size)


def answered_or_closed(sock: socket.socket) -> bytes | None:
    """Wait for the broker's reaction: the first bytes of an answer, or None when it
    closed (or reset) the connection. Fails if it does neither in time."""
    try:
        data = sock.recv(65536)
    except (ConnectionResetError, BrokenPipeError):
        return None
    except socket.timeout:
        pytest.fail(f"the broker neither answered nor closed the connection within {ANSWER_TIMEOUT_S}s")
    return data or None


def parse_api_versions_v0(payload: bytes) -> tuple[int, int, dict[int, tuple[int, int]]]:
    """ApiVersions response v0 (header v0): correlation_id i32, error_code i16,
    [api_key i16, min_version i16, max_version i16]. Returns (correlation id, error
    code, {api_key: (min, max)})."""
    correlation_id, error_code, count = struct.unpack_from(">ihi", payload, 0)
    assert 0 <= count < 1000, f"implausible api_keys count {count}"
    assert len(payload) == 10 + 6 * count, f"{len(payload)} bytes for {count} api keys"
    apis = {}
    for i in range(count):
        key, lo, hi = struct.unpack_from(">hhh", payload, 10 + 6 * i)
        apis[key] = (lo, hi)
    return correlation_id, error_code, apis


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------


def test_api_versions_v0_by_hand_echoes_the_correlation_id_and_lists_the_core_apis(broker):
    with connect(broker.port) as s:
        s.sendall(frame(request_header(API_API_VERSIONS, 0, 0x5EED, "caudal-raw")))
        correlation_id, error_code, apis = parse_api_versions_v0(read_response(s))
    assert correlation_id == 0x5EED
    assert error_code == 0
    for key in (API_PRODUCE, API_FETCH, API_METADATA, API_API_VERSIONS):
        assert key in apis, f"api key {key} missing from ApiVersions: {sorted(apis)}"
    for key, (lo, hi) in apis.items():
        assert 0 <= lo <= hi, f"api key {key}: bad range {lo}..{hi}"
    # v0 is what was just answered, so ApiVersions itself must list it.
    assert apis[API_API_VERSIONS][0] == 0
    # Every shard answers the same.
    with connect(broker.port + 1) as s:
        s.sendall(frame(request_header(API_API_VERSIONS, 0, 1, "caudal-raw")))
        assert parse_api_versions_v0(read_response(s))[2] == apis
    assert_clients_work(broker)


def test_api_versions_above_the_supported_range_gets_unsupported_version_in_the_v0_layout(broker):
    # Clients open with the newest ApiVersions they know (kafka-python 2.3: v4,
    # librdkafka: v3 or v4). A broker that has less must answer UNSUPPORTED_VERSION in
    # the v0 body layout, listing its own ApiVersions range, so the client can retry
    # with a version both know (KIP-511); closing instead makes librdkafka fall back
    # to ancient protocol versions.
    too_new = 127
    body = b"\x07caudal\x041.0\x00"  # v3+ body: compact strings name and version, no tags
    with connect(broker.port) as s:
        s.sendall(frame(request_header(API_API_VERSIONS, too_new, 42, "caudal-raw", flexible=True) + body))
        correlation_id, error_code, apis = parse_api_versions_v0(read_response(s))
    assert correlation_id == 42
    assert error_code == UNSUPPORTED_VERSION
    assert API_API_VERSIONS in apis, f"the answer must carry ApiVersions' own range: {apis}"
    lo, hi = apis[API_API_VERSIONS]
    assert 0 <= lo <= hi < too_new
    assert_clients_work(broker)


def test_truncated_frame_then_close_leaves_the_broker_serving_others(broker):
    # A size of 100 followed by only 10 bytes: the broker waits for the rest. While it
    # waits, other connections on the same shard must be served.
    s = connect(broker.port)
    try:
        s.sendall(struct.pack(">i", 100) + request_header(API_METADATA, 1, 1, "x")[:10])
        assert_clients_work(broker)
    finally:
        s.close()
    assert_clients_work(broker)


@pytest.mark.parametrize("declared", [2**31 - 1, -1], ids=["2^31-1", "negative"])
def test_impossible_frame_size_closes_that_connection_and_the_broker_stays_up(broker, declared):
    with connect(broker.port) as s:
        # Only the size prefix and a few bytes: the broker must refuse on the size alone,
        # before buffering (or allocating) anything.
        s.sendall(struct.pack(">i", declared) + b"\x00\x12\x00\x00")
        try:
            data = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        except socket.timeout:
            pytest.fail(f"connection still open {ANSWER_TIMEOUT_S}s after a frame size of {declared}")
        assert data == b"", f"expected the connection closed, got {data[:64]!r}"
    assert_clients_work(broker)


def _unknown_api_key() -> bytes:
    return frame(request_header(9999, 0, 7, "x"))


def _header_cut_inside_the_frame() -> bytes:
    # A complete 5-byte frame that holds only part of a request header.
    return frame(struct.pack(">hhb", API_METADATA, 1, 0))


def _client_id_longer_than_the_frame() -> bytes:
    return frame(struct.pack(">hhih", API_METADATA, 1, 7, 500) + b"abc")


def _metadata_with_huge_topic_count() -> bytes:
    # Metadata v1 whose topics array claims 2^31-1 entries and carries none: a count
    # read off the wire must not size an allocation.
    return frame(request_header(API_METADATA, 1, 7, "x") + struct.pack(">i", 2**31 - 1))


def _api_versions_with_unknown_flexible_header_garbage() -> bytes:
    # ApiVersions v3 whose tagged-field count in the header is a varint that never ends.
    return frame(struct.pack(">hhih", API_API_VERSIONS, 3, 7, 1) + b"x" + b"\xff" * 8)


@pytest.mark.parametrize(
    "payload",
    [
        _unknown_api_key(),
        _header_cut_inside_the_frame(),
        _client_id_longer_than_the_frame(),
        _metadata_with_huge_topic_count(),
        _api_versions_with_unknown_flexible_header_garbage(),
    ],
    ids=[
        "unknown_api_key",
        "header_cut_inside_frame",
        "client_id_past_frame_end",
        "metadata_huge_topic_count",
        "endless_tagged_field_varint",
    ],
)
def test_malformed_request_is_answered_or_its_connection_closed_and_the_broker_stays_up(broker, payload):
    with connect(broker.port) as s:
        s.sendall(payload)
        data = answered_or_closed(s)
    if data is not None and len(data) >= 8:
        # If the broker chose to answer, the answer must be for this request.
        _size, correlation_id = struct.unpack_from(">ii", data, 0)
        assert correlation_id == 7, f"answer carries correlation id {correlation_id}, not 7"
    assert_clients_work(broker)


def test_abuse_on_every_shard_at_once_leaves_both_serving(broker):
    # One bad connection per shard, all open at the same time, then closed.
    socks = []
    try:
        for port in broker.ports:
            s = connect(port)
            s.sendall(struct.pack(">i", 100) + b"\x00" * 10)  # truncated
            socks.append(s)
            s = connect(port)
            s.sendall(_unknown_api_key())
            socks.append(s)
        assert_clients_work(broker)
    finally:
        for s in socks:
            s.close()
    assert_clients_work(broker)
