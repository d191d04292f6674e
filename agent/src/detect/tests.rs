use super::*;

#[test]
fn default_profile_is_valid() {
    let p = default_profile();
    assert_eq!(p.name, "edgewarden-default");
}
