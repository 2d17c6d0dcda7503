//! Benchmarks behind `ota bench`: each returns figures, the caller prints.

pub mod raw_fanout;
