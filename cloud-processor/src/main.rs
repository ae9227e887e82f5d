//! cloud-processor: turns raw objects into packed SQS messages.
fn main() {}
