//! System gauges: CPU usage from `/proc/stat`, memory from `/proc/meminfo`, load from
//! `/proc/loadavg`, uptime from `/proc/uptime`. Each parser returns a clear error naming what was
//! missing or malformed.

use super::text::{dec_f64, dec_u64, fields, lines};

/// Why a system file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SystemFormatError {
    /// A required line or field is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A field is not a number.
    #[error("{0} is not a number")]
    NotANumber(&'static str),
}

/// Aggregate CPU time from the `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Time spent doing anything but idling or waiting for I/O.
    pub busy: u64,
    /// All time (busy + idle + iowait).
    pub total: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat`:
/// `cpu user nice system idle iowait irq softirq steal guest guest_nice`.
/// `guest` and `guest_nice` are already included in `user` and `nice`, so they are not added.
pub fn parse_stat_cpu(data: &[u8]) -> Result<CpuTimes, SystemFormatError> {
    let line = lines(data)
        .find(|l| l.starts_with(b"cpu "))
        .ok_or(SystemFormatError::Missing("aggregate \"cpu\" line"))?;
    let mut v = [0u64; 8];
    let mut n = 0;
    for f in fields(line).skip(1).take(8) {
        v[n] = dec_u64(f).ok_or(SystemFormatError::NotANumber("a cpu time field"))?;
        n += 1;
    }
    if n < 4 {
        return Err(SystemFormatError::Missing("cpu idle time (4th field)"));
    }
    let idle = v[3].saturating_add(v[4]);
    let total = v.iter().fold(0u64, |a, &x| a.saturating_add(x));
    Ok(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// The fork counter, `processes N` in `/proc/stat`: forks and clones since boot, machine-wide.
pub fn parse_stat_forks(data: &[u8]) -> Result<u64, SystemFormatError> {
    let line = lines(data)
        .find(|l| l.starts_with(b"processes "))
        .ok_or(SystemFormatError::Missing("\"processes\" line"))?;
    fields(line)
        .nth(1)
        .and_then(dec_u64)
        .ok_or(SystemFormatError::NotANumber(
            "the fork counter (processes)",
        ))
}

/// CPU usage in percent between two readings; `None` when no time passed or counters went down.
pub fn cpu_percent(prev: CpuTimes, cur: CpuTimes) -> Option<f64> {
    let total = cur.total.checked_sub(prev.total)?;
    let busy = cur.busy.checked_sub(prev.busy)?;
    if total == 0 {
        return None;
    }
    Some((busy.min(total) as f64 * 100.0 / total as f64).clamp(0.0, 100.0))
}

/// Memory in use (`MemTotal - MemAvailable`) in percent of `MemTotal`, from `/proc/meminfo`.
/// Kernels before 3.14 lack `MemAvailable`; there `MemFree + Buffers + Cached` stands in.
pub fn parse_meminfo_used_pct(data: &[u8]) -> Result<f64, SystemFormatError> {
    let (mut total, mut avail, mut free, mut buffers, mut cached) = (None, None, None, None, None);
    for line in lines(data) {
        let mut f = fields(line);
        let (Some(key), Some(value)) = (f.next(), f.next()) else {
            continue;
        };
        let slot = match key {
            b"MemTotal:" => &mut total,
            b"MemAvailable:" => &mut avail,
            b"MemFree:" => &mut free,
            b"Buffers:" => &mut buffers,
            b"Cached:" => &mut cached,
            _ => continue,
        };
        *slot = Some(dec_u64(value).ok_or(SystemFormatError::NotANumber("a meminfo value"))?);
    }
    let total = total.ok_or(SystemFormatError::Missing("MemTotal"))?;
    if total == 0 {
        return Err(SystemFormatError::Missing("a non-zero MemTotal"));
    }
    let avail = match avail {
        Some(a) => a,
        None => free
            .ok_or(SystemFormatError::Missing("MemAvailable and MemFree"))?
            .saturating_add(buffers.unwrap_or(0))
            .saturating_add(cached.unwrap_or(0)),
    };
    let used = total.saturating_sub(avail);
    Ok(used as f64 * 100.0 / total as f64)
}

/// One-minute load average, the first field of `/proc/loadavg`.
pub fn parse_loadavg_1m(data: &[u8]) -> Result<f64, SystemFormatError> {
    let f = fields(data)
        .next()
        .ok_or(SystemFormatError::Missing("1-minute load average"))?;
    dec_f64(f).ok_or(SystemFormatError::NotANumber("1-minute load average"))
}

/// Seconds since boot, the first field of `/proc/uptime`.
pub fn parse_uptime_s(data: &[u8]) -> Result<f64, SystemFormatError> {
    let f = fields(data)
        .next()
        .ok_or(SystemFormatError::Missing("uptime seconds"))?;
    dec_f64(f).ok_or(SystemFormatError::NotANumber("uptime seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_usage_comes_from_busy_over_total_deltas() {
        let a = parse_stat_cpu(b"cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                busy: 200,
                total: 1000
            }
        );
        let b = parse_stat_cpu(b"cpu  150 0 150 1100 100 0 0 0 50 0\n").unwrap();
        assert_eq!(cpu_percent(a, b), Some(20.0));
        assert_eq!(cpu_percent(b, a), None);
        assert_eq!(cpu_percent(a, a), None);
    }

    #[test]
    fn cpu_line_problems_are_named() {
        assert_eq!(
            parse_stat_cpu(b"cpu0 1 2 3 4\n"),
            Err(SystemFormatError::Missing("aggregate \"cpu\" line"))
        );
        assert_eq!(
            parse_stat_cpu(b"cpu  1 x 3 4\n"),
            Err(SystemFormatError::NotANumber("a cpu time field"))
        );
        assert!(parse_stat_cpu(b"cpu  1 2\n").is_err());
    }

    #[test]
    fn the_fork_counter_is_read_by_name() {
        let stat = b"cpu  1 2 3 4\nintr 5 6\nctxt 99\nbtime 1\nprocesses 4479\nprocs_running 1\n";
        assert_eq!(parse_stat_forks(stat), Ok(4479));
        assert!(parse_stat_forks(b"cpu  1 2 3 4\n").is_err());
        assert!(parse_stat_forks(b"processes x\n").is_err());
    }

    #[test]
    fn memory_uses_available_or_the_old_kernel_fallback() {
        let m = b"MemTotal:        1000 kB\nMemFree:          100 kB\nMemAvailable:     250 kB\n";
        assert_eq!(parse_meminfo_used_pct(m), Ok(75.0));
        let old = b"MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 350 kB\n";
        assert_eq!(parse_meminfo_used_pct(old), Ok(50.0));
        assert_eq!(
            parse_meminfo_used_pct(b"MemFree: 1 kB\n"),
            Err(SystemFormatError::Missing("MemTotal"))
        );
    }

    #[test]
    fn load_and_uptime_parse_the_first_field() {
        assert_eq!(parse_loadavg_1m(b"0.52 0.40 0.30 1/123 4567\n"), Ok(0.52));
        assert_eq!(parse_uptime_s(b"12345.67 24000.00\n"), Ok(12345.67));
        assert!(parse_uptime_s(b"").is_err());
        assert!(parse_loadavg_1m(b"-1 0 0").is_err());
    }
}
