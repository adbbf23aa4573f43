//! The `fedgw` command line.
fn main() {}
