//! Security events from the gateway's logs.
//!
//! (module map filled in below)

pub mod analyze;
pub mod class;
pub mod classify;
pub mod context;
pub mod format;
pub mod lines;
pub mod scan;
pub mod tracker;

pub use analyze::{Analyzer, LineOutcome, Stream};
pub use class::{ClassCounts, EventClass};
pub use classify::{classify, Classified, Hint};
pub use format::{frame, Format, Frame};
pub use scan::{
    scan_files, scan_reader, FileSummary, LineRow, ScanAlert, ScanOptions, ScanSummary,
};
pub use tracker::{AlertKind, LogAlert, Rules};
