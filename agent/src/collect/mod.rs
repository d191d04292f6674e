//! Collectors: one [`Collector::sample`] per tick turns the kernel's view of the machine into a
//! [`Snapshot`].
//!
//! Every sub-collector is a plain synchronous function over `/proc` (or netlink), cheap, and
//! independent of the others:
//!
//! | field / metric | source | module |
//! |---|---|---|
//! | `net` | `/proc/net/dev` | [`network`] |
//! | `tcp_listen`, `udp_listen`, `established` | netlink sock_diag, else `/proc/net/{tcp,udp}{,6}` | [`sockets`], [`netlink`], [`procnet`] |
//! | interface of an address | netlink `RTM_GETADDR`, `/proc/net/if_inet6`, else `/proc/net/fib_trie` + `route` | [`interfaces`] |
//! | `tcp_*`, `udp_*` | `/proc/net/snmp`, `/proc/net/snmp6` | [`snmp`] |
//! | `process_count`, `new_process_names`, `top_*_processes`, `listening_process_names` | `/proc/<pid>/stat`, `/proc/<pid>/fd` | [`process`] |
//! | `cpu_usage`, `memory_used_pct`, `load_avg_1m`, `uptime_s` | `/proc/{stat,meminfo,loadavg,uptime}` | [`system`] |
//! | whether the TCP table changed | `/proc/net/snmp`, `/proc/net/sockstat{,6}` | [`gate`] |
//!
//! **Quiet ticks** (`[collect] skip_unchanged`, on by default). The two costly parts of a tick
//! are the kernel's walk of its whole TCP established hash (sized by the machine's memory, not by
//! the number of sockets) and the `/proc` walk. A tick dumps the TCP listeners and UDP sockets
//! every time, but reuses the connected TCP sockets of the last full walk while the kernel's TCP
//! counters show that no connection came, went or changed state to or from `ESTABLISHED`; it
//! walks everything at least once per report interval and on any doubt. What such a tick can and
//! cannot see is written in [`gate`]. Likewise, `/proc` is listed only when the fork counter
//! moved; known processes are re-read through their open `stat` files ([`process`]). Both
//! shortcuts give the same snapshot as a full walk: `tests/tests/collect_gating.rs` checks that
//! over random sequences of connections, listeners and processes, verdicts included.
//!
//! Modules depend downwards only: [`raw`] (one socket, state numbers) and `text` are leaves;
//! [`netlink`] (the sock_diag dump) and [`procnet`] (the `/proc/net` parser) read into
//! [`raw::RawSocket`]; [`interfaces`] uses [`netlink`]'s dumper; [`sockets`] picks a source and
//! builds the reported lists from all of them.
//!
//! Every `/proc` file read each tick is opened once and re-read with `pread`
//! (`ProcFile`); the tick runs on the runtime's own thread.
//!
//! When netlink sock_diag cannot be opened at all (a kernel or emulator without it, a seccomp or
//! address-family filter), `/proc/net` takes over for the run; that is logged once at INFO and is
//! not an error. A netlink dump that fails on a socket that did open is an error.
//!
//! A sub-collector that fails (unreadable or missing file, netlink error, malformed content)
//! is logged at WARN the first time and at DEBUG afterwards, counted in [`Collector::errors`],
//! and only its own field is `None` (or its metric absent) for that tick. Malformed lines inside
//! an otherwise good file are skipped, each one counted as an error. Nothing here panics.
//!
//! The first sample is the warm-up: `interval_ms = 0`, all deltas zero, and interval-based
//! gauges (`cpu_usage`, `top_cpu_processes`) absent.

pub mod destinations;
pub mod gate;
pub mod interfaces;
pub mod netlink;
pub mod network;
pub mod process;
pub mod procnet;
pub mod raw;
pub mod snmp;
pub mod sockets;
pub mod system;
mod text;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use crate::config::CollectConfig;
use crate::metrics;
use crate::snapshot::{MetricValue, Snapshot};

use destinations::DestinationTracker;
use gate::{TcpFingerprint, TcpGate};
use interfaces::{AddrReader, AddrTable};
use netlink::Proto;
use network::{IfFilter, NetState};
use process::ProcessTable;
use snmp::SnmpState;
use sockets::{RawSocket, SocketReader};
use system::CpuTimes;
use text::ProcFile;

/// The real procfs mount.
pub const PROC_ROOT: &str = "/proc";
/// Minimum time between two `/proc/<pid>/fd` walks (each costs milliseconds). A listener that
/// appears within this time of the previous walk is reported at once, its owner up to this much
/// later.
pub const OWNER_WALK_MIN_GAP: Duration = Duration::from_secs(30);
/// A listening socket whose process cannot be seen without privilege (another user's process,
/// and no `CAP_SYS_PTRACE`) is reported with its owner UID instead: `uid:0` for root's sshd.
pub const UID_OWNER_PREFIX: &str = "uid:";
/// Longest reuse of a TCP walk until [`Collector::set_full_walk_max_age`] says otherwise: the
/// default report interval.
pub const DEFAULT_FULL_WALK_MAX_AGE: Duration = Duration::from_secs(300);
/// The address table is re-read at least this often even when every address resolves.
const ADDR_TABLE_MAX_AGE: Duration = Duration::from_secs(60);

/// Parser of a one-number system file.
type GaugeParser = fn(&[u8]) -> Result<f64, system::SystemFormatError>;

/// The sub-collectors, for logging and once-only warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Source {
    NetDev,
    TcpSockets,
    UdpSockets,
    SockDiag,
    Addresses,
    Snmp,
    Snmp6,
    Processes,
    SocketOwners,
    Cpu,
    Memory,
    Load,
    Uptime,
    Sockstat,
    Forks,
}

impl Source {
    const fn name(self) -> &'static str {
        match self {
            Source::NetDev => "net_dev",
            Source::TcpSockets => "tcp_sockets",
            Source::UdpSockets => "udp_sockets",
            Source::SockDiag => "sock_diag",
            Source::Addresses => "interface_addresses",
            Source::Snmp => "snmp",
            Source::Snmp6 => "snmp6",
            Source::Processes => "processes",
            Source::SocketOwners => "socket_owners",
            Source::Cpu => "cpu",
            Source::Memory => "memory",
            Source::Load => "load",
            Source::Uptime => "uptime",
            Source::Sockstat => "sockstat",
            Source::Forks => "fork_counter",
        }
    }
}

/// Failure counting with one WARN per sub-collector, DEBUG for repeats.
#[derive(Debug, Default)]
struct Faults {
    errors: u64,
    warned: u32,
}

impl Faults {
    fn fail(&mut self, src: Source, count: u64, err: &dyn fmt::Display) {
        self.errors = self.errors.saturating_add(count);
        let bit = 1u32 << (src as u8);
        if self.warned & bit == 0 {
            self.warned |= bit;
            warn!(collector = src.name(), error = %err, "Collector failed; skipping it this tick (further failures are logged at debug level).");
        } else {
            debug!(collector = src.name(), error = %err, "Collector failed again; skipping it this tick.");
        }
    }

    fn read(&mut self, src: Source, path: &Path, err: &std::io::Error) {
        self.fail(
            src,
            1,
            &format_args!("cannot read {}: {err}", path.display()),
        );
    }
}

/// CPU levels of `process_cpu_levels`, in percent of one core.
pub const CPU_LEVELS: [u32; 7] = [5, 10, 20, 35, 50, 70, 90];
/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on every Linux ABI).
const USER_HZ: u64 = 100;

/// Files under the proc root, opened once (see `ProcFile`).
#[derive(Debug)]
struct Paths {
    root: PathBuf,
    net_dev: ProcFile,
    snmp: ProcFile,
    snmp6: ProcFile,
    sockstat: ProcFile,
    sockstat6: ProcFile,
    stat: ProcFile,
    meminfo: ProcFile,
    loadavg: ProcFile,
    uptime: ProcFile,
}

impl Paths {
    fn new(root: PathBuf) -> Paths {
        Paths {
            net_dev: ProcFile::new(root.join("net/dev")),
            snmp: ProcFile::new(root.join("net/snmp")),
            snmp6: ProcFile::new(root.join("net/snmp6")),
            sockstat: ProcFile::single(root.join("net/sockstat")),
            sockstat6: ProcFile::single(root.join("net/sockstat6")),
            stat: ProcFile::single(root.join("stat")),
            meminfo: ProcFile::single(root.join("meminfo")),
            loadavg: ProcFile::single(root.join("loadavg")),
            uptime: ProcFile::single(root.join("uptime")),
            root,
        }
    }
}

/// Samples the machine once per tick, keeping what deltas and caches need between ticks.
#[derive(Debug)]
pub struct Collector {
    paths: Paths,
    filter: IfFilter,
    top_processes: usize,
    seq: u64,
    last: Option<Instant>,
    /// The interval before the current one (ms), for two-interval CPU levels.
    prev_interval_ms: u64,
    destinations: DestinationTracker,
    faults: Faults,
    vanished: u64,
    buf: Vec<u8>,
    net: NetState,
    snmp: SnmpState,
    cpu: Option<CpuTimes>,
    procs: ProcessTable,
    sockets: SocketReader,
    tcp: Vec<RawSocket>,
    udp: Vec<RawSocket>,
    /// Connected (non-listening) TCP sockets of the last full walk, in its order.
    tcp_connected: Vec<RawSocket>,
    gate: TcpGate,
    /// List `/proc` every tick, whatever the fork counter says.
    list_every_tick: bool,
    /// This tick's `ActiveOpens`, `PassiveOpens`, `AttemptFails`, `EstabResets`, `CurrEstab`.
    tcp_counters: Option<[u64; 5]>,
    addr_reader: AddrReader,
    addrs: AddrTable,
    addrs_read_at: Option<Instant>,
    listen_inodes: Vec<u64>,
    scratch_inodes: Vec<u64>,
    /// Owner name of each listening socket inode found so far (only inodes still listening).
    owners: HashMap<u64, String>,
    /// Listening inodes whose owner the last walk could not see (sorted): they do not trigger
    /// another walk.
    unowned: Vec<u64>,
    /// A walk is due but was deferred by [`OWNER_WALK_MIN_GAP`].
    owners_pending: bool,
    last_owner_walk: Option<Instant>,
}

impl Collector {
    /// A collector over the live `/proc` (and netlink when `cfg.netlink`).
    pub fn new(cfg: &CollectConfig) -> Collector {
        Collector::with_root(cfg, PathBuf::from(PROC_ROOT))
    }

    /// A collector over another proc tree, e.g. a fixture directory. Netlink describes the live
    /// kernel, so it is used only when `proc_root` is `/proc`.
    pub fn with_root(cfg: &CollectConfig, proc_root: PathBuf) -> Collector {
        let netlink = cfg.netlink && proc_root == Path::new(PROC_ROOT);
        Collector {
            filter: IfFilter::new(
                &cfg.include_interfaces,
                &cfg.exclude_interfaces,
                cfg.include_loopback,
            ),
            top_processes: cfg.top_processes,
            seq: 0,
            last: None,
            prev_interval_ms: 0,
            destinations: DestinationTracker::default(),
            faults: Faults::default(),
            vanished: 0,
            buf: Vec::with_capacity(16 * 1024),
            net: NetState::default(),
            snmp: SnmpState::default(),
            cpu: None,
            procs: ProcessTable::for_root(&proc_root),
            sockets: SocketReader::new(&proc_root, netlink),
            tcp: Vec::new(),
            udp: Vec::new(),
            tcp_connected: Vec::new(),
            gate: TcpGate::new(cfg.skip_unchanged && netlink, DEFAULT_FULL_WALK_MAX_AGE),
            list_every_tick: !cfg.skip_unchanged,
            tcp_counters: None,
            addr_reader: AddrReader::new(netlink),
            addrs: AddrTable::default(),
            addrs_read_at: None,
            listen_inodes: Vec::new(),
            scratch_inodes: Vec::new(),
            owners: HashMap::new(),
            unowned: Vec::new(),
            owners_pending: false,
            last_owner_walk: None,
            paths: Paths::new(proc_root),
        }
    }

    /// Failures counted so far (each skipped malformed line counts as one).
    pub fn errors(&self) -> u64 {
        self.faults.errors
    }

    /// Processes that exited while being read, so far. Routine, hence not an error.
    pub fn vanished(&self) -> u64 {
        self.vanished
    }

    /// Interface counter resets seen so far.
    pub fn counter_resets(&self) -> u64 {
        self.net.resets()
    }

    /// True while netlink sock_diag is the socket source.
    pub fn uses_netlink(&self) -> bool {
        self.sockets.uses_netlink()
    }

    /// Full TCP walks, reused walks and walks forced by doubt so far (see [`gate`]).
    pub fn gate_stats(&self) -> gate::GateStats {
        self.gate.stats()
    }

    /// Ticks that listed `/proc` and ticks that skipped the listing so far (see [`process`]).
    pub fn process_listings(&self) -> (u64, u64) {
        self.procs.listings()
    }

    /// Sets the longest time a TCP walk is reused: the report interval, so that every report
    /// holds at least one full walk.
    pub fn set_full_walk_max_age(&mut self, max_age: Duration) {
        self.gate.set_max_age(max_age);
    }

    /// Turns the reuse of TCP walks on or off (off: the whole table every tick).
    pub fn set_tcp_gating(&mut self, on: bool) {
        self.gate.set_enabled(on);
    }

    /// Turns the skipping of `/proc` listings on or off (off: `/proc` listed every tick).
    pub fn set_listing_gating(&mut self, on: bool) {
        self.list_every_tick = !on;
    }

    /// One tick: samples every sub-collector. Synchronous; meant for `spawn_blocking`.
    pub fn sample(&mut self) -> Snapshot {
        let now = Instant::now();
        let warm_up = self.last.is_none();
        let interval_ms = self
            .last
            .map(|t| u64::try_from(now.duration_since(t).as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.last = Some(now);
        self.seq += 1;
        let errors_before = self.faults.errors;
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut snap = Snapshot {
            seq: self.seq,
            at_ms,
            interval_ms,
            ..Snapshot::default()
        };
        // `/proc/stat` first: its fork counter must be read before the process walk.
        let (cpu, forks) = self.read_stat();
        snap.net = self.sample_net();
        // Counters before the socket dumps, so that a change during a dump shows next tick.
        self.sample_snmp(&mut snap.custom);
        // Processes before sockets: the owner lookup reuses the names just read.
        self.sample_processes(&mut snap.custom, interval_ms, forks);
        self.prev_interval_ms = interval_ms;
        self.sample_sockets(&mut snap);
        self.sample_system(&mut snap.custom, warm_up, cpu);
        let errors = self.faults.errors.saturating_sub(errors_before);
        snap.custom.insert(
            metrics::COLLECTOR_ERRORS.to_owned(),
            MetricValue::Number(errors as f64),
        );
        snap
    }

    fn sample_net(&mut self) -> Option<crate::snapshot::NetDelta> {
        match self.paths.net_dev.read(&mut self.buf) {
            Ok(data) => {
                let (delta, skipped) = self.net.update(data, &self.filter);
                if skipped > 0 {
                    self.faults.fail(
                        Source::NetDev,
                        skipped,
                        &format_args!(
                            "{}: skipped {skipped} malformed line(s)",
                            self.paths.net_dev.path().display()
                        ),
                    );
                }
                Some(delta)
            }
            Err(e) => {
                self.faults
                    .read(Source::NetDev, self.paths.net_dev.path(), &e);
                None
            }
        }
    }

    fn sample_snmp(&mut self, custom: &mut BTreeMap<String, MetricValue>) {
        self.tcp_counters = None;
        let mut counters = match self.paths.snmp.read(&mut self.buf) {
            Ok(data) => match snmp::parse_snmp(data) {
                Ok(c) => c,
                Err(e) => {
                    self.faults.fail(
                        Source::Snmp,
                        1,
                        &format_args!("{}: {e}", self.paths.snmp.path().display()),
                    );
                    self.snmp.reset();
                    return;
                }
            },
            Err(e) => {
                self.faults.read(Source::Snmp, self.paths.snmp.path(), &e);
                self.snmp.reset();
                return;
            }
        };
        match self.paths.snmp6.read(&mut self.buf) {
            Ok(data) => {
                let skipped = snmp::add_snmp6(data, &mut counters);
                if skipped > 0 {
                    self.faults.fail(
                        Source::Snmp6,
                        skipped,
                        &format_args!(
                            "{}: skipped {skipped} malformed line(s)",
                            self.paths.snmp6.path().display()
                        ),
                    );
                }
            }
            // A kernel without IPv6 has no snmp6: its UDP counters are then IPv4 only.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                // Without the IPv6 part the sums would drop, then jump: start over.
                self.faults.read(Source::Snmp6, self.paths.snmp6.path(), &e);
                self.snmp.reset();
                return;
            }
        }
        self.tcp_counters = tcp_gate_counters(&counters);
        if self.tcp_counters.is_none() && self.gate.enabled() {
            let e = format!(
                "{}: no Tcp ActiveOpens, PassiveOpens, AttemptFails, EstabResets or CurrEstab column; the TCP table is walked every tick",
                self.paths.snmp.path().display()
            );
            self.faults.fail(Source::Snmp, 1, &e);
        }
        let deltas = self.snmp.update(counters);
        for (name, d) in snmp::COUNTER_METRICS.iter().zip(deltas) {
            if let Some(d) = d {
                custom.insert((*name).to_owned(), MetricValue::Number(d as f64));
            }
        }
        if let Some(raw) = snmp::raw_packets_out(&deltas) {
            custom.insert(
                metrics::RAW_PACKETS_OUT.to_owned(),
                MetricValue::Number(raw as f64),
            );
        }
    }

    fn sample_processes(
        &mut self,
        custom: &mut BTreeMap<String, MetricValue>,
        interval_ms: u64,
        forks: Option<u64>,
    ) {
        let forks = forks.filter(|_| !self.list_every_tick);
        let sample = match self.procs.walk(&self.paths.root, self.top_processes, forks) {
            Ok(s) => s,
            Err(e) => {
                self.faults.read(Source::Processes, &self.paths.root, &e);
                return;
            }
        };
        self.vanished = self.vanished.saturating_add(sample.vanished);
        if sample.malformed > 0 {
            self.faults.fail(
                Source::Processes,
                sample.malformed,
                &format_args!(
                    "skipped {} malformed /proc/<pid>/stat file(s)",
                    sample.malformed
                ),
            );
        }
        if let Some((n, path, e)) = &sample.unreadable {
            self.faults.fail(
                Source::Processes,
                *n,
                &format_args!("cannot read {} (and {} more): {e}", path.display(), n - 1),
            );
        }
        custom.insert(
            metrics::PROCESS_COUNT.to_owned(),
            MetricValue::Number(sample.count as f64),
        );
        custom.insert(
            metrics::NEW_PROCESS_NAMES.to_owned(),
            MetricValue::StringList(sample.new_names),
        );
        if let Some(top) = sample.top_cpu {
            custom.insert(
                metrics::TOP_CPU_PROCESSES.to_owned(),
                MetricValue::StringList(top),
            );
        }
        custom.insert(
            metrics::TOP_MEMORY_PROCESSES.to_owned(),
            MetricValue::StringList(sample.top_memory),
        );
        let window_ms = interval_ms.saturating_add(self.prev_interval_ms);
        if let (Some(by_name), true) = (sample.cpu_by_name, window_ms > 0) {
            custom.insert(
                metrics::PROCESS_CPU_LEVELS.to_owned(),
                MetricValue::StringList(cpu_levels(&by_name, window_ms)),
            );
        }
    }

    fn sample_sockets(&mut self, snap: &mut Snapshot) {
        let tcp_ok = self.read_tcp();
        let udp_ok = self.read_sockets(Proto::Udp);
        if !tcp_ok && !udp_ok {
            return;
        }
        self.refresh_addresses();
        self.refresh_owners(tcp_ok, udp_ok);
        if tcp_ok {
            let d = self.destinations.update(&self.tcp);
            snap.custom.insert(
                metrics::DESTINATION_ENDPOINTS.to_owned(),
                MetricValue::StringList(d.current),
            );
            snap.custom.insert(
                metrics::RECURRING_DESTINATIONS.to_owned(),
                MetricValue::StringList(d.recurring),
            );
            snap.tcp_listen = Some(sockets::listen_ports(
                &self.tcp,
                false,
                &self.addrs,
                &self.owners,
            ));
            snap.established = Some(sockets::established(&self.tcp, &self.addrs));
        }
        if udp_ok {
            snap.udp_listen = Some(sockets::listen_ports(
                &self.udp,
                true,
                &self.addrs,
                &self.owners,
            ));
        }
        if tcp_ok && udp_ok {
            // Process names only: a `uid:N` owner names no process.
            let unowned = &self.unowned;
            let mut names: Vec<String> = self
                .owners
                .iter()
                .filter(|(i, _)| unowned.binary_search(i).is_err())
                .map(|(_, n)| n.clone())
                .collect();
            names.sort_unstable();
            names.dedup();
            snap.custom.insert(
                metrics::LISTENING_PROCESS_NAMES.to_owned(),
                MetricValue::StringList(names),
            );
        }
    }

    /// The gate's counters for this tick (`None` on any doubt, counted as a failure).
    fn tcp_fingerprint(&mut self) -> Option<TcpFingerprint> {
        let snmp = self.tcp_counters?;
        let (inuse, tw) = read_parsed(
            &mut self.paths.sockstat,
            &mut self.buf,
            &mut self.faults,
            Source::Sockstat,
            gate::parse_sockstat,
            None,
        )?;
        // A kernel without IPv6 has no sockstat6 and no IPv6 sockets.
        let inuse6 = read_parsed(
            &mut self.paths.sockstat6,
            &mut self.buf,
            &mut self.faults,
            Source::Sockstat,
            gate::parse_sockstat6,
            Some(0),
        )?;
        Some(TcpFingerprint {
            snmp,
            inuse: inuse.saturating_add(inuse6),
            tw,
        })
    }

    /// Reads the TCP table into `self.tcp`: listeners from the kernel and the connected sockets
    /// of the last full walk when [`gate`] allows it, else the whole table. False when it failed.
    fn read_tcp(&mut self) -> bool {
        if !self.sockets.uses_netlink() && self.gate.enabled() {
            // `/proc/net/tcp` costs the same whatever is asked of it.
            self.gate.set_enabled(false);
        }
        let fp = if self.gate.enabled() {
            self.tcp_fingerprint()
        } else {
            None
        };
        let now = Instant::now();
        let reason = self.gate.decide(fp.as_ref(), now);
        if let Some(r) = reason {
            tracing::trace!(reason = ?r, "Walking the whole TCP table.");
        }
        if reason.is_none() {
            match self.sockets.read_tcp_listeners(&mut self.tcp) {
                Ok(()) => {
                    self.tcp.extend_from_slice(&self.tcp_connected);
                    return true;
                }
                Err(e) => {
                    self.faults.fail(Source::SockDiag, 1, &e);
                    self.gate.failed();
                }
            }
        }
        if !self.read_sockets(Proto::Tcp) {
            self.gate.failed();
            self.tcp_connected.clear();
            return false;
        }
        // Listeners first, then the connected sockets in walk order: the same table whether
        // the kernel walked per family or both at once, and whether or not a walk is reused.
        self.tcp_connected.clear();
        self.tcp_connected
            .extend(self.tcp.iter().filter(|s| s.state != raw::state::LISTEN));
        self.tcp.retain(|s| s.state == raw::state::LISTEN);
        self.tcp.extend_from_slice(&self.tcp_connected);
        let syn_sent = self
            .tcp_connected
            .iter()
            .filter(|s| s.state == raw::state::SYN_SENT)
            .count() as u64;
        self.gate.walked(fp, self.tcp.len() as u64, syn_sent, now);
        true
    }

    /// Reads one protocol's table into `self.tcp` / `self.udp`; false when it failed.
    fn read_sockets(&mut self, proto: Proto) -> bool {
        let (out, src) = match proto {
            Proto::Tcp => (&mut self.tcp, Source::TcpSockets),
            Proto::Udp => (&mut self.udp, Source::UdpSockets),
        };
        let (report, failed) = match self.sockets.read(proto, out) {
            Ok(r) => (r, None),
            Err((r, e)) => (r, Some(e)),
        };
        if let Some(e) = &report.netlink_failed {
            if report.netlink_disabled {
                // The fallback working as designed (no sock_diag in this kernel or emulator,
                // or the address family is filtered): said once, not an error.
                info!(error = %e, "Netlink sock_diag unavailable; reading sockets from /proc/net from now on.");
            } else {
                self.faults.fail(Source::SockDiag, 1, e);
            }
        }
        for s in &report.skipped {
            self.faults.fail(
                src,
                s.lines,
                &format_args!(
                    "{}: skipped {} malformed line(s), first at line {}",
                    s.path.display(),
                    s.lines,
                    s.first_line
                ),
            );
        }
        match failed {
            Some(e) => {
                self.faults.fail(src, 1, &e);
                false
            }
            None => true,
        }
    }

    fn refresh_addresses(&mut self) {
        let stale = self
            .addrs_read_at
            .is_none_or(|t| t.elapsed() >= ADDR_TABLE_MAX_AGE)
            || sockets::has_unknown_address(&self.tcp, &self.addrs)
            || sockets::has_unknown_address(&self.udp, &self.addrs);
        if !stale {
            return;
        }
        let (table, problems) = self.addr_reader.read(&self.paths.root, &mut self.buf);
        if let Some(e) = &problems.netlink {
            self.faults.fail(Source::Addresses, 1, e);
        }
        for (path, e) in &problems.unreadable {
            self.faults.read(Source::Addresses, path, e);
        }
        if problems.skipped > 0 {
            self.faults.fail(
                Source::Addresses,
                problems.skipped,
                &format_args!(
                    "skipped {} malformed interface address line(s)",
                    problems.skipped
                ),
            );
        }
        self.addrs = table;
        self.addrs_read_at = Some(Instant::now());
    }

    /// Finds the owners of new listening sockets. Closed sockets are dropped from the cache
    /// without a walk; a walk runs only for inodes never looked up, at most once per
    /// [`OWNER_WALK_MIN_GAP`], and looks only for those.
    fn refresh_owners(&mut self, tcp_ok: bool, udp_ok: bool) {
        if !(tcp_ok && udp_ok) {
            // A partial view would look like a change; keep the cache until both read again.
            return;
        }
        sockets::listening_inodes(&self.tcp, &self.udp, &mut self.scratch_inodes);
        if self.scratch_inodes == self.listen_inodes && !self.owners_pending {
            return;
        }
        std::mem::swap(&mut self.scratch_inodes, &mut self.listen_inodes);
        let live = &self.listen_inodes;
        self.owners.retain(|i, _| live.binary_search(i).is_ok());
        self.unowned.retain(|i| live.binary_search(i).is_ok());
        self.scratch_inodes.clear();
        self.scratch_inodes.extend(
            live.iter()
                .copied()
                .filter(|i| !self.owners.contains_key(i) && self.unowned.binary_search(i).is_err()),
        );
        if self.scratch_inodes.is_empty() {
            self.owners_pending = false;
            return;
        }
        if self
            .last_owner_walk
            .is_some_and(|t| t.elapsed() < OWNER_WALK_MIN_GAP)
        {
            self.owners_pending = true;
            return;
        }
        self.last_owner_walk = Some(Instant::now());
        let procs = &self.procs;
        match process::socket_owners(&self.paths.root, &self.scratch_inodes, |pid| {
            procs.name_of(pid).map(str::to_owned)
        }) {
            Ok(o) => {
                if o.denied > 0 {
                    debug!(
                        processes = o.denied,
                        "Socket owners of other users' processes are not visible without privileges."
                    );
                }
                for &inode in &self.scratch_inodes {
                    if !o.names.contains_key(&inode) {
                        self.unowned.push(inode);
                        // What needs no privilege: the socket's owner UID (from the table).
                        if let Some(uid) = sockets::uid_of(&self.tcp, &self.udp, inode) {
                            self.owners
                                .insert(inode, format!("{UID_OWNER_PREFIX}{uid}"));
                        }
                    }
                }
                self.unowned.sort_unstable();
                self.owners.extend(o.names);
                self.owners_pending = false;
            }
            Err(e) => {
                self.faults.read(Source::SocketOwners, &self.paths.root, &e);
                self.owners_pending = true;
            }
        }
    }

    /// Reads `/proc/stat` once: CPU times (the failure already counted when `None`) and the
    /// fork counter (`None` when missing: `/proc` is then listed every tick).
    fn read_stat(&mut self) -> (Option<system::CpuTimes>, Option<u64>) {
        match self.paths.stat.read(&mut self.buf) {
            Ok(data) => {
                let cpu = system::parse_stat_cpu(data);
                let forks = system::parse_stat_forks(data);
                let cpu = match cpu {
                    Ok(c) => Some(c),
                    Err(e) => {
                        let e = format!("{}: {e}", self.paths.stat.path().display());
                        self.faults.fail(Source::Cpu, 1, &e);
                        None
                    }
                };
                let forks = match forks {
                    Ok(f) => Some(f),
                    Err(e) => {
                        let e = format!("{}: {e}", self.paths.stat.path().display());
                        self.faults.fail(Source::Forks, 1, &e);
                        None
                    }
                };
                (cpu, forks)
            }
            Err(e) => {
                self.faults.read(Source::Cpu, self.paths.stat.path(), &e);
                (None, None)
            }
        }
    }

    fn sample_system(
        &mut self,
        custom: &mut BTreeMap<String, MetricValue>,
        warm_up: bool,
        cpu: Option<system::CpuTimes>,
    ) {
        if let Some(cur) = cpu {
            if let Some(pct) = self.cpu.and_then(|prev| system::cpu_percent(prev, cur)) {
                if !warm_up {
                    custom.insert(metrics::CPU_USAGE.to_owned(), MetricValue::Number(pct));
                }
            }
        }
        self.cpu = cpu;
        let gauges: [(Source, &str, GaugeParser); 3] = [
            (
                Source::Memory,
                metrics::MEMORY_USED_PCT,
                system::parse_meminfo_used_pct,
            ),
            (Source::Load, metrics::LOAD_AVG_1M, system::parse_loadavg_1m),
            (Source::Uptime, metrics::UPTIME_S, system::parse_uptime_s),
        ];
        for (src, name, parse) in gauges {
            let file = match src {
                Source::Memory => &mut self.paths.meminfo,
                Source::Load => &mut self.paths.loadavg,
                _ => &mut self.paths.uptime,
            };
            match file.read(&mut self.buf) {
                Ok(data) => match parse(data) {
                    Ok(v) => {
                        custom.insert(name.to_owned(), MetricValue::Number(v));
                    }
                    Err(e) => {
                        self.faults
                            .fail(src, 1, &format_args!("{}: {e}", file.path().display()))
                    }
                },
                Err(e) => self.faults.read(src, file.path(), &e),
            }
        }
    }
}

/// Reads and parses one kept-open file; a failure is counted against `src` and gives `None`.
/// A missing file gives `if_missing` when that is set (an optional file), else is a failure.
fn read_parsed<T, E: fmt::Display>(
    file: &mut ProcFile,
    buf: &mut Vec<u8>,
    faults: &mut Faults,
    src: Source,
    parse: fn(&[u8]) -> Result<T, E>,
    if_missing: Option<T>,
) -> Option<T> {
    match file.read(buf) {
        Ok(data) => match parse(data) {
            Ok(v) => Some(v),
            Err(e) => {
                faults.fail(src, 1, &format_args!("{}: {e}", file.path().display()));
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && if_missing.is_some() => if_missing,
        Err(e) => {
            faults.read(src, file.path(), &e);
            None
        }
    }
}

/// The gate's `/proc/net/snmp` counters, `None` when one is missing (an unfamiliar file).
fn tcp_gate_counters(c: &snmp::Counters) -> Option<[u64; 5]> {
    Some([
        c[snmp::TCP_ACTIVE_OPENS]?,
        c[snmp::TCP_PASSIVE_OPENS]?,
        c[snmp::TCP_ATTEMPT_FAILS]?,
        c[snmp::TCP_ESTAB_RESETS]?,
        c[snmp::TCP_CURR_ESTAB]?,
    ])
}

/// `process_cpu_levels` items: for each name, `name@L` for every level L of [`CPU_LEVELS`]
/// its busiest process reached over `window_ms` (its CPU clock ticks over the window, in percent
/// of one core).
pub fn cpu_levels(by_name: &[(String, u64)], window_ms: u64) -> Vec<String> {
    let mut out = Vec::new();
    for (name, ticks) in by_name {
        let pct = ticks.saturating_mul(1000 / USER_HZ * 100) / window_ms.max(1);
        for l in CPU_LEVELS {
            if pct >= u64::from(l) {
                out.push(format!("{name}@{l}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
