//! fedgw: a SPIFFE trust-domain federation gateway.
