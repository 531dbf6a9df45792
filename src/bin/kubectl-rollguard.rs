//! `kubectl rollguard`: the kubectl plugin.
fn main() {}
