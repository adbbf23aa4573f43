//! X509-SVID verification (placeholder being written).
