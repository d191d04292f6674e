//! Command-line front end of the detector.
fn main() {}
