use super::*;

#[test]
fn empty_file_gives_the_embedded_defaults() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c.collect.interval, Duration::from_secs(10));
    assert_eq!(c.report.interval, Duration::from_secs(300));
    assert_eq!(c.report.format, ReportFormat::Json);
    assert_eq!(c.spool.max_bytes, 16 << 20);
    assert!(c.mqtt.is_none());
}

#[test]
fn every_problem_is_reported_with_key_and_line() {
    let src = "thing_name = \"gw-1\"\nbogus = 1\n[collect]\ninterval = \"ten\"\n[report]\nformat = \"xml\"\nmax_ports = -1\n[spool]\nwhat = 3\n";
    let e = Config::from_toml(src).unwrap_err();
    let text = e.to_string();
    assert_eq!(e.errors.len(), 5, "{text}");
    assert!(text.contains("line 2: bogus: unknown key"), "{text}");
    assert!(text.contains("line 4: collect.interval"), "{text}");
    assert!(text.contains("line 6: report.format"), "{text}");
    assert!(text.contains("line 7: report.max_ports"), "{text}");
    assert!(text.contains("line 9: spool.what: unknown key"), "{text}");
}

#[test]
fn topics_beyond_aws_iot_limits_are_refused_with_key_and_line() {
    let deep = "thing_name = \"gw-1\"\n[detect]\nviolations_topic = \"a/b/c/d/e/f/g/{thing}/v\"\n";
    let e = Config::from_toml(deep).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("line 3: detect.violations_topic"), "{text}");
    assert!(text.contains("8 slashes; AWS IoT allows 7"), "{text}");
    let long = format!(
        "thing_name = \"{}\"\n[detect]\nviolations_topic = \"{}/{{thing}}\"\n",
        "t".repeat(128),
        "x".repeat(128)
    );
    let e = Config::from_toml(&long).unwrap_err();
    assert!(e.to_string().contains("AWS IoT allows 256"), "{e}");
    assert_eq!(topic_problem("edgewarden/gw-1/violations"), None);
    assert!(topic_problem("a\0b").is_some());
}

#[test]
fn syntax_errors_name_the_line() {
    let e = Config::from_toml("a = 1\n[collect\n").unwrap_err();
    assert_eq!(e.errors[0].line, Some(2), "{e}");
}

#[test]
fn mqtt_requires_its_files_and_defaults_alpn_on_443() {
    let e = Config::from_toml("[mqtt]\nendpoint = \"x\"\n").unwrap_err();
    assert!(e.to_string().contains("mqtt.ca_file"), "{e}");
    let c = Config::from_toml(
        "[mqtt]\nendpoint=\"x\"\nport=443\nca_file=\"a\"\ncert_file=\"b\"\nkey_file=\"c\"\n",
    )
    .unwrap();
    assert_eq!(c.mqtt.unwrap().alpn.as_deref(), Some("x-amzn-mqtt-ca"));
}

#[test]
fn short_report_interval_is_accepted_with_a_warning() {
    let c = Config::from_toml("[report]\ninterval = \"5s\"\n").unwrap();
    assert_eq!(c.report.interval, Duration::from_secs(5));
    assert_eq!(c.warnings.len(), 1);
    assert!(Config::from_toml("[report]\ninterval = \"500ms\"\n").is_err());
}

#[test]
fn print_config_output_parses_back_to_the_same_config() {
    let c = Config::from_toml(
        "[mqtt]\nendpoint=\"x\"\nca_file=\"a\"\ncert_file=\"b\"\nkey_file=\"c\"\n",
    )
    .unwrap();
    let again = Config::from_toml(&c.to_toml()).unwrap();
    assert_eq!(c, again);
}

proptest::proptest! {
    #[test]
    fn config_parser_never_panics(s in "(?s).{0,200}") {
        let _ = Config::from_toml(&s);
    }
}

#[test]
fn validation_uses_only_the_given_environment() {
    let fixed = Environment::fixed();
    let c = Config::from_toml_in("", &fixed).unwrap();
    assert_eq!(c.thing_name, "edgewarden");
    assert_eq!(c.state_dir, fixed.state_dir);
    let c = Config::from_toml_in("thing_name = \"gw-7\"\n", &fixed).unwrap();
    assert_eq!(c.thing_name, "gw-7");
    // The environment variable, when set, overrides the file.
    let env = Environment {
        thing_name: Some("from-env".into()),
        ..Environment::fixed()
    };
    let c = Config::from_toml_in("thing_name = \"gw-7\"\nstate_dir = \"/tmp/x\"\n", &env).unwrap();
    assert_eq!(c.thing_name, "from-env");
    assert_eq!(c.state_dir, std::path::PathBuf::from("/tmp/x"));
}
