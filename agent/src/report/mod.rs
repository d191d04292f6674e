//! The Device Defender metrics report: folding snapshots, encoding, ids and responses.
//!
//! - [`aggregate`]: [`Aggregator`] folds one report interval of snapshots into a [`MetricsReport`].
//! - [`defender`]: the wire schema (the only place that knows Device Defender field names).
//! - [`encode`](mod@encode): long JSON, short JSON and CBOR. The accepted/rejected answers are
//!   parsed in [`crate::transport::response`].
//! - [`report_id`]: [`ReportIds`], strictly increasing ids persisted in the state directory.

pub mod aggregate;
pub mod defender;
pub mod encode;
pub mod report_id;

pub use aggregate::{Aggregator, MAX_CUSTOM_LIST_LEN};
pub use defender::{
    format_remote_addr, sanitize_string, Capped, Connection, ConnectionList, CustomMetric,
    CustomValue, Header, InterfaceName, KeyStyle, MetricName, Metrics, MetricsReport, NetworkStats,
    Number, Port, PortList, Topics, MAX_REPORT_ID, VERSION,
};
pub use encode::{encode, encode_pretty, key_style, MAX_PAYLOAD_BYTES};
pub use report_id::{ReportIds, REPORT_ID_FILE};

#[cfg(test)]
mod tests;
