//! One whole device audit (`edgewarden::audit::run`, every check), measured in **CPU time of the
//! auditing thread** (user + system, `CLOCK_THREAD_CPUTIME_ID`).
//!
//! Groups:
//! - `audit/host`: this machine's real root `/` with the embedded default configuration plus a
//!   device certificate (P-256), a CA bundle of 3 certificates and a key written by the bench:
//!   the real `/proc/net` tables and the host's journald, SSH and broker configuration. `sshd -T`
//!   would run in a child process whose CPU is not counted here (no sshd is installed on the
//!   reference machine);
//! - `audit/fixture`: a copy of the `tests/fixtures/audit/weak` tree with the same certificates
//!   and key inside it (6 findings; the key and state directory modes are fine there).
//!
//! Run: `cargo bench -j2 -p benches --bench audit`
//!
//! Reference figures (x86_64 VM, 2 shared vCPUs, other builds running; median CPU time per
//! audit): host 2.34 ms, fixture 48 µs.

use std::path::{Path, PathBuf};

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgewarden::audit::{self, AuditInputs};
use edgewarden::config::Config;

/// CPU time consumed by the calling thread (user + system), in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// Criterion measurement: CPU time of the benchmarking thread.
struct ThreadCpuTime;

struct NsFormatter;

impl ValueFormatter for NsFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical < 1e3 {
            (1.0, "ns cpu")
        } else if typical < 1e6 {
            (1e3, "µs cpu")
        } else {
            (1e6, "ms cpu")
        };
        for v in values.iter_mut() {
            *v /= div;
        }
        unit
    }

    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let n = match t {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => *n,
        } as f64;
        for v in values.iter_mut() {
            *v = n * 1e9 / *v;
        }
        "elem/s cpu"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, i: u64) -> u64 {
        thread_cpu_ns().saturating_sub(i)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &NsFormatter
    }
}

fn cert(not_after_year: i32) -> String {
    let key = rcgen::KeyPair::generate().expect("P-256 key");
    let mut p = rcgen::CertificateParams::new(vec!["bench-gw".into()]).expect("params");
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
    p.self_signed(&key).expect("self-signed").pem()
}

/// Device certificate, CA bundle and key under `dir`; returns their paths relative to `dir`,
/// written as absolute device paths.
fn credentials(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let etc = dir.join("etc/edgewarden");
    std::fs::create_dir_all(&etc).expect("mkdir");
    std::fs::write(etc.join("device.pem.crt"), cert(2035)).expect("write cert");
    std::fs::write(
        etc.join("ca.pem"),
        format!("{}{}{}", cert(2036), cert(2037), cert(2038)),
    )
    .expect("write CA");
    std::fs::write(etc.join("private.pem.key"), "bench key").expect("write key");
    std::fs::set_permissions(
        etc.join("private.pem.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod key");
    (
        PathBuf::from("/etc/edgewarden/device.pem.crt"),
        PathBuf::from("/etc/edgewarden/ca.pem"),
        PathBuf::from("/etc/edgewarden/private.pem.key"),
    )
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("fixture tree") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("audit");
    g.throughput(Throughput::Elements(1));

    // The host: credentials in a temporary directory, named by their real absolute paths.
    let host_dir = tmp.path().join("host");
    let (cert, ca, key) = credentials(&host_dir);
    let on_host = |p: &Path| host_dir.join(p.strip_prefix("/").expect("absolute"));
    let mut cfg = Config::embedded_default();
    cfg.state_dir = tmp.path().join("state");
    std::fs::create_dir_all(&cfg.state_dir).expect("state dir");
    cfg.audit.cert_file = Some(on_host(&cert));
    cfg.audit.ca_file = Some(on_host(&ca));
    cfg.audit.key_file = Some(on_host(&key));
    let host = AuditInputs::from_config(&cfg, Path::new("/"), 1_800_000_000_000);
    let r = audit::run(&host);
    eprintln!(
        "audit/host: {} findings, {} errors",
        r.findings.len(),
        r.errors.len()
    );
    g.bench_function("host", |b| b.iter(|| audit::run(&host)));

    // The weak fixture tree, credentials inside it.
    let root = tmp.path().join("fixture");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/audit/weak"),
        &root,
    );
    credentials(&root);
    let mut fx = AuditInputs::from_config(&cfg, &root, 1_800_000_000_000);
    fx.cert_file = Some(cert);
    fx.ca_file = Some(ca);
    fx.key_file = Some(key);
    fx.log_files = vec!["/var/log/auth.log".into()];
    fx.state_dir = "/var/lib/edgewarden".into();
    let r = audit::run(&fx);
    eprintln!(
        "audit/fixture: {} findings, {} errors",
        r.findings.len(),
        r.errors.len()
    );
    g.bench_function("fixture", |b| b.iter(|| audit::run(&fx)));
    g.finish();
}

criterion_group! {
    name = audit_benches;
    config = Criterion::default().with_measurement(ThreadCpuTime).sample_size(50);
    targets = bench
}
criterion_main!(audit_benches);
