//! Free loopback ports.
//!
//! Owns picking a port for a listener that a test configures before something else
//! binds it (a gateway process, SPIRE, Envoy). Does not own retrying a start that lost
//! the race for the port: the harness that starts the process does (the gateway
//! harness retries on `EADDRINUSE`). A listener the test binds itself binds
//! `127.0.0.1:0` directly instead.

use std::net::{Ipv4Addr, TcpListener};

/// A free loopback port: bind `127.0.0.1:0`, read the port, release it.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
