//! `block_source`: an address goes into an nftables set with a timeout; a chain of the agent's
//! own table drops what the set holds.
//!
//! On first use, when the set does not exist, the agent creates (with one `nft -f -` script)
//! table `TABLE`, sets `SET` (IPv4) and `SET6` (IPv6, family `inet` and `ip6`), both with
//! `flags timeout`, and a chain hooked on input that drops their sources. An operator may create
//! the table and sets themselves; the agent then only adds elements. Loopback, unspecified and
//! allow-listed addresses are never blocked.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use crate::audit::command;

/// Deadline of one `nft` call.
pub const NFT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an address may not be blocked; `None` when it may.
pub fn refusal(ip: IpAddr, allow_list: &[(IpAddr, u8)]) -> Option<String> {
    let ip = ip.to_canonical();
    if ip.is_loopback() {
        return Some(format!("{ip} is a loopback address"));
    }
    if ip.is_unspecified() || ip.is_multicast() {
        return Some(format!("{ip} is not a unicast source address"));
    }
    allow_list
        .iter()
        .find(|(net, prefix)| contains(*net, *prefix, ip))
        .map(|(net, prefix)| format!("{ip} is allow-listed ({net}/{prefix})"))
}

/// True when `ip` is inside `net/prefix`.
pub fn contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (net.to_canonical(), ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The nftables side of `block_source`.
#[derive(Debug, Clone)]
pub struct Nft {
    program: String,
    family: String,
    table: String,
    set: String,
    ready: bool,
}

impl Nft {
    /// `program` is `nft` (or a path); the set is (family, table, set).
    pub fn new(program: &Path, set: &(String, String, String)) -> Nft {
        Nft {
            program: program.display().to_string(),
            family: set.0.clone(),
            table: set.1.clone(),
            set: set.2.clone(),
            ready: false,
        }
    }

    fn set_for(&self, ip: IpAddr) -> Result<String, String> {
        match (self.family.as_str(), ip) {
            ("ip", IpAddr::V6(_)) => Err(format!(
                "{ip}: the nftables family ip holds IPv4 addresses only"
            )),
            ("ip6", IpAddr::V4(_)) => Err(format!(
                "{ip}: the nftables family ip6 holds IPv6 addresses only"
            )),
            ("inet", IpAddr::V6(_)) => Ok(format!("{}6", self.set)),
            ("ip6", IpAddr::V6(_)) => Ok(self.set.clone()),
            _ => Ok(self.set.clone()),
        }
    }

    fn nft(&self, args: &[&str], stdin: &[u8]) -> Result<command::CommandOutcome, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        command::run(&self.program, &args, &[], stdin, NFT_TIMEOUT)
    }

    /// Creates table, sets and chain unless the set already exists.
    fn ensure(&mut self) -> Result<(), String> {
        if self.ready {
            return Ok(());
        }
        let probe = self.nft(&["list", "set", &self.family, &self.table, &self.set], b"")?;
        if !probe.success() {
            let (f, t, s) = (&self.family, &self.table, &self.set);
            let mut script = format!("add table {f} {t}\n");
            let mut rules = String::new();
            if f != "ip6" {
                script.push_str(&format!(
                    "add set {f} {t} {s} {{ type ipv4_addr; flags timeout; }}\n"
                ));
                rules.push_str(&format!("add rule {f} {t} input ip saddr @{s} drop\n"));
            }
            if f == "inet" {
                script.push_str(&format!(
                    "add set {f} {t} {s}6 {{ type ipv6_addr; flags timeout; }}\n"
                ));
                rules.push_str(&format!("add rule {f} {t} input ip6 saddr @{s}6 drop\n"));
            }
            if f == "ip6" {
                script.push_str(&format!(
                    "add set {f} {t} {s} {{ type ipv6_addr; flags timeout; }}\n"
                ));
                rules.push_str(&format!("add rule {f} {t} input ip6 saddr @{s} drop\n"));
            }
            script.push_str(&format!(
                "add chain {f} {t} input {{ type filter hook input priority -10; policy accept; }}\n"
            ));
            script.push_str(&rules);
            let out = self.nft(&["-f", "-"], script.as_bytes())?;
            if !out.success() {
                return Err(format!(
                    "cannot create the nftables set {f} {t} {s}: {}",
                    out.describe(NFT_TIMEOUT)
                ));
            }
        }
        self.ready = true;
        Ok(())
    }

    /// Adds `ip` to the set for `timeout`. `Ok` carries a description of what was done.
    pub fn block(&mut self, ip: IpAddr, timeout: Duration) -> Result<String, String> {
        let set = self.set_for(ip)?;
        self.ensure()?;
        let element = format!("{{ {ip} timeout {}s }}", timeout.as_secs().max(1));
        let out = self.nft(
            &["add", "element", &self.family, &self.table, &set, &element],
            b"",
        )?;
        if out.success() {
            Ok(format!(
                "{ip} added to {} {} {set} for {} s",
                self.family,
                self.table,
                timeout.as_secs()
            ))
        } else {
            // The set may have been deleted behind our back: set it up again next time.
            self.ready = false;
            Err(format!("nft add element: {}", out.describe(NFT_TIMEOUT)))
        }
    }

    /// The command line `block` would run (for dry runs and the record).
    pub fn describe(&self, ip: IpAddr, timeout: Duration) -> String {
        let set = self.set_for(ip).unwrap_or_else(|e| e);
        format!(
            "{} add element {} {} {set} {{ {ip} timeout {}s }}",
            self.program,
            self.family,
            self.table,
            timeout.as_secs().max(1)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_unspecified_and_allow_listed_addresses_are_refused() {
        let allow = vec![
            ("192.168.0.0".parse().unwrap(), 16),
            ("fd00::".parse().unwrap(), 8),
        ];
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "192.168.4.20",
            "fd12::7",
        ] {
            assert!(refusal(ip.parse().unwrap(), &allow).is_some(), "{ip}");
        }
        for ip in ["203.0.113.9", "192.169.0.1", "2001:db8::1", "10.1.2.3"] {
            assert!(refusal(ip.parse().unwrap(), &allow).is_none(), "{ip}");
        }
        assert!(contains(
            "0.0.0.0".parse().unwrap(),
            0,
            "8.8.8.8".parse().unwrap()
        ));
    }
}
