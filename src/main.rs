//! `h2o` command-line tool.
fn main() {}
