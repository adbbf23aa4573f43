//! Fetching a bundle from a bundle endpoint (being written).
