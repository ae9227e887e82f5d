//! edge-agent: relays finished files from a local directory to S3.
fn main() {}
