#!/usr/bin/env python3
"""Delay the packets of one netfilter queue: a stand-in for `tc netem delay`.

The netns testbed adds latency between its two datacenters with tc netem. Where the
kernel has no sch_netem (some minimal VM kernels), the router sends every forwarded
packet to netfilter queue QUEUE (iptables ... -j NFQUEUE) and this program holds each
one for DELAY_MS +/- JITTER_MS (uniform, like netem's default) before letting the
kernel forward it. The packets are the real ones of the real TCP connections; only
the timer is in user space. Loss is not done here: the router drops 1% of forwarded
packets with iptables' statistic match.

    delay.py QUEUE DELAY_MS JITTER_MS STATS_FILE

It speaks nfnetlink_queue directly (no library): bind the queue, ask for packet
metadata only, answer each packet id with NF_ACCEPT when its time has come. Each
second it rewrites STATS_FILE with "<packets> <mean delay ms>". Without this program
running the queued packets are dropped, so a dead delayer shows as a dead link, never
as a link without latency.
"""

import heapq
import os
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_ACCEPT = 1


def attr(kind, payload):
    head = struct.pack("=HH", 4 + len(payload), kind)
    pad = b"\0" * (-len(payload) % 4)
    return head + payload + pad


def message(msg_type, flags, queue, attrs, seq):
    body = struct.pack("=BB", socket.AF_INET, 0) + struct.pack(">H", queue) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, seq, 0) + body


def messages(data):
    """(type, payload after nlmsghdr) of each netlink message in one datagram."""
    offset = 0
    while offset + 16 <= len(data):
        length, msg_type, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, offset)
        if length < 16:
            return
        yield msg_type, data[offset + 16:offset + length]
        offset += (length + 3) & ~3


def attrs(payload):
    offset = 0
    while offset + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, offset)
        if length < 4:
            return
        yield kind & 0x3FFF, payload[offset + 4:offset + length]
        offset += (length + 3) & ~3


def configure(sock, queue):
    """Bind QUEUE, metadata only, a long queue; fail loudly on any refusal."""
    steps = [
        ("bind", [attr(NFQA_CFG_CMD, struct.pack(">BBH", NFQNL_CFG_CMD_BIND, 0, socket.AF_INET))]),
        ("copy mode", [attr(NFQA_CFG_PARAMS, struct.pack(">IB", 0, NFQNL_COPY_META))]),
        ("queue length", [attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", 20000))]),
    ]
    for seq, (what, config) in enumerate(steps, start=1):
        sock.send(message(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, queue, config, seq))
        for msg_type, payload in messages(sock.recv(65536)):
            if msg_type == NLMSG_ERROR:
                (error,) = struct.unpack_from("=i", payload, 0)
                if error != 0:
                    sys.exit(f"delay.py: the kernel refused the queue's {what}: {os.strerror(-error)}")


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    queue, delay_ms, jitter_ms, stats_file = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE (root)
    sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
    configure(sock, queue)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    due = []  # (release time, packet id)
    packets, total_delay, last_stats, seq = 0, 0.0, 0.0, 100
    while True:
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, packet_id = heapq.heappop(due)
            seq += 1
            verdict = attr(NFQA_VERDICT_HDR, struct.pack(">II", NF_ACCEPT, packet_id))
            sock.send(message(NFQNL_MSG_VERDICT, NLM_F_REQUEST, queue, [verdict], seq))
        if now - last_stats >= 1.0:
            last_stats = now
            mean = total_delay / packets * 1000 if packets else 0.0
            with open(stats_file + ".new", "w") as out:
                out.write(f"{packets} {mean:.1f}\n")
            os.replace(stats_file + ".new", stats_file)
        timeout = min(max(due[0][0] - now, 0.0), 1.0) if due else 1.0
        readable, _, _ = select.select([sock], [], [], timeout)
        if not readable:
            continue
        data = sock.recv(1 << 20)
        arrived = time.monotonic()
        for msg_type, payload in messages(data):
            if msg_type != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                continue
            for kind, value in attrs(payload[4:]):
                if kind == NFQA_PACKET_HDR:
                    (packet_id,) = struct.unpack_from(">I", value, 0)
                    hold = (delay_ms + random.uniform(-jitter_ms, jitter_ms)) / 1000.0
                    heapq.heappush(due, (arrived + hold, packet_id))
                    packets += 1
                    total_delay += hold


if __name__ == "__main__":
    main()
