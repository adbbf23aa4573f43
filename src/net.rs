//! PLACEHOLDER until the listener-limits branch lands: the handle a listener gives
//! each request to close its connection.

use tokio_util::sync::CancellationToken;

/// Closes the connection a request came on.
#[derive(Debug, Clone, Default)]
pub struct ConnectionHandle {
    token: CancellationToken,
}

impl ConnectionHandle {
    /// Close the connection.
    pub fn close(&self, reason: &'static str) {
        tracing::debug!(reason, "closing connection");
        self.token.cancel();
    }
}
