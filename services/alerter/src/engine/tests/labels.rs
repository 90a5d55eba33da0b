use std::cmp::Ordering;

use super::labels;
use crate::engine::labels::{
    alert_order, bound_annotations, fingerprint, fingerprint_u64, validate, LabelError, Labels,
    MAX_ANNOTATION_LEN, MAX_LABELS, MAX_NAME_LEN, MAX_VALUE_LEN,
};

#[test]
fn empty_set_fingerprint_is_the_fnv_offset_basis() {
    assert_eq!(fingerprint_u64(&Labels::new()), 14_695_981_039_346_656_037);
    assert_eq!(fingerprint(&Labels::new()), "cbf29ce484222325");
}

#[test]
fn fingerprint_equals_prometheus_reference_vector() {
    // From prometheus/common model/signature_test.go (TestMetricToFingerprint).
    let set = labels(&[("name", "garland, briggs"), ("fear", "love is not enough")]);
    assert_eq!(fingerprint_u64(&set), 5_799_056_148_416_392_346);
    assert_eq!(fingerprint(&set), "507a62d79ee76c9a");
}

#[test]
fn fingerprint_is_order_independent_and_stable() {
    let a = labels(&[("alertname", "x"), ("instance", "a1"), ("job", "agents")]);
    let b = labels(&[("job", "agents"), ("alertname", "x"), ("instance", "a1")]);
    assert_eq!(fingerprint(&a), fingerprint(&b));
    assert_eq!(
        fingerprint(&labels(&[("alertname", "x")])),
        "d240efc3896bf266"
    );
    assert_eq!(fingerprint(&a).len(), 16);
}

#[test]
fn fingerprint_separates_names_from_values() {
    let a = labels(&[("a", "bc")]);
    let b = labels(&[("ab", "c")]);
    assert_ne!(fingerprint(&a), fingerprint(&b));
}

#[test]
fn validate_accepts_prometheus_names_and_refuses_others() {
    assert_eq!(
        validate(&labels(&[("_a1", "x"), ("Zz_9", ""), ("alertname", "y")])),
        Ok(())
    );
    for bad in ["1abc", "a-b", "a.b", "", "é", "a b"] {
        assert!(
            matches!(
                validate(&labels(&[(bad, "x")])),
                Err(LabelError::InvalidName { .. })
            ),
            "{bad:?} should be refused"
        );
    }
}

#[test]
fn validate_enforces_the_bounds() {
    let many: Labels = (0..=MAX_LABELS)
        .map(|i| (format!("l{i}"), "v".to_owned()))
        .collect();
    assert_eq!(
        validate(&many),
        Err(LabelError::TooMany {
            count: MAX_LABELS + 1
        })
    );
    let at_cap: Labels = many.into_iter().take(MAX_LABELS).collect();
    assert_eq!(validate(&at_cap), Ok(()));

    let long_name = "a".repeat(MAX_NAME_LEN + 1);
    assert!(matches!(
        validate(&labels(&[(&long_name, "v")])),
        Err(LabelError::NameTooLong { .. })
    ));
    assert_eq!(
        validate(&labels(&[(&"a".repeat(MAX_NAME_LEN), "v")])),
        Ok(())
    );

    let long_value = "v".repeat(MAX_VALUE_LEN + 1);
    assert_eq!(
        validate(&labels(&[("k", &long_value)])),
        Err(LabelError::ValueTooLong { name: "k".into() })
    );
}

#[test]
fn errors_do_not_echo_huge_input() {
    let huge = "a".repeat(10_000);
    let err = validate(&labels(&[(&huge, "v")])).unwrap_err();
    assert!(err.to_string().len() < 200, "{err}");
}

#[test]
fn annotations_are_cut_not_refused() {
    let mut set = labels(&[("summary", "short"), ("bad-name", "x")]);
    set.insert("description".into(), "é".repeat(MAX_ANNOTATION_LEN));
    let bounded = bound_annotations(set);
    assert_eq!(bounded.get("summary").map(String::as_str), Some("short"));
    assert!(!bounded.contains_key("bad-name"));
    let description = &bounded["description"];
    assert!(description.len() <= MAX_ANNOTATION_LEN);
    assert!(description.len() > MAX_ANNOTATION_LEN - 2);
}

#[test]
fn alert_order_puts_job_then_instance_first() {
    let with_job = labels(&[("job", "b"), ("zzz", "1")]);
    let other_job = labels(&[("job", "a")]);
    let without_job = labels(&[("a", "1")]);
    assert_eq!(alert_order(&other_job, &with_job), Ordering::Less);
    assert_eq!(alert_order(&with_job, &without_job), Ordering::Less);
    assert_eq!(alert_order(&without_job, &with_job), Ordering::Greater);
    let i1 = labels(&[("job", "a"), ("instance", "1")]);
    let i2 = labels(&[("job", "a"), ("instance", "2")]);
    assert_eq!(alert_order(&i1, &i2), Ordering::Less);
    // Then smaller sets first.
    let small = labels(&[("x", "9")]);
    let big = labels(&[("a", "1"), ("b", "1")]);
    assert_eq!(alert_order(&small, &big), Ordering::Less);
    assert_eq!(alert_order(&small, &small.clone()), Ordering::Equal);
}
