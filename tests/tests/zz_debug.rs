use edgewarden::snapshot::MetricValue;
use integration_tests::lab::{Attack, Lab, LabConfig};
#[test]
#[ignore]
fn debug_lab() {
    let mut lab = Lab::start(LabConfig {
        seed: 1,
        tick: std::time::Duration::from_secs(1),
        scale: 1.0,
    })
    .unwrap();
    let which = std::env::var("ATTACK").unwrap_or_default();
    for i in 0..14 {
        if i == 4 {
            for a in Attack::ALL {
                if a.name() == which {
                    lab.attack(a);
                }
            }
        }
        let s = lab.next_snapshot().unwrap();
        let g = |k: &str| match s.custom.get(k) {
            Some(MetricValue::StringList(l)) => l.join(" "),
            Some(MetricValue::Number(n)) => n.to_string(),
            _ => "-".into(),
        };
        eprintln!(
            "tick {} rec=[{}] cur=[{}] raw={} est={:?}",
            s.seq,
            g("recurring_destinations"),
            g("destination_endpoints"),
            g("raw_packets_out"),
            s.established.as_ref().map(|e| e.len())
        );
    }
}
