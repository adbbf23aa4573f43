//! Serving a bundle at a bundle endpoint (being written).
