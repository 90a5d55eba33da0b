use super::labels;
use crate::engine::template::{check, render, TemplateError, MAX_RENDERED_LEN, MAX_TEMPLATE_LEN};

fn r(template: &str, value: f64) -> String {
    render(
        template,
        &labels(&[("agent", "a1"), ("queue", "gpu")]),
        value,
    )
}

#[test]
fn value_prints_as_go_prints_floats() {
    assert_eq!(r("{{ $value }}", 0.5), "0.5");
    assert_eq!(r("{{$value}}", 3.0), "3");
    assert_eq!(r("{{ $value }}", 100_000.0), "100000");
    assert_eq!(r("{{ $value }}", 1_000_000.0), "1e+06");
    assert_eq!(r("{{ $value }}", 1_234_567.0), "1.234567e+06");
    assert_eq!(r("{{ $value }}", 0.0001), "0.0001");
    assert_eq!(r("{{ $value }}", 0.00001), "1e-05");
    assert_eq!(r("{{ $value }}", -2.5), "-2.5");
    assert_eq!(r("{{ $value }}", f64::NAN), "NaN");
    assert_eq!(r("{{ $value }}", f64::INFINITY), "+Inf");
    assert_eq!(r("{{ .Value }}", 7.0), "7");
}

#[test]
fn labels_are_substituted_and_missing_ones_are_empty() {
    assert_eq!(
        r("agent {{ $labels.agent }} on {{ .Labels.queue }}", 0.0),
        "agent a1 on gpu"
    );
    assert_eq!(r("[{{ $labels.missing }}]", 0.0), "[]");
}

#[test]
fn humanize_uses_si_prefixes_with_four_digits() {
    assert_eq!(r("{{ humanize $value }}", 1_234_567.0), "1.235M");
    assert_eq!(r("{{ humanize $value }}", 1500.0), "1.5k");
    assert_eq!(r("{{ humanize $value }}", 2e9), "2G");
    assert_eq!(r("{{ humanize $value }}", 999.0), "999");
    assert_eq!(r("{{ humanize $value }}", 0.0), "0");
    assert_eq!(r("{{ humanize $value }}", 0.5), "500m");
    assert_eq!(r("{{ humanize $value }}", -1500.0), "-1.5k");
    assert_eq!(r("{{ $value | humanize }}", 12_345.0), "12.35k");
}

#[test]
fn humanize_percentage_scales_by_a_hundred() {
    assert_eq!(r("{{ humanizePercentage $value }}", 0.123), "12.3%");
    assert_eq!(r("{{ humanizePercentage $value }}", 1.0), "100%");
    assert_eq!(r("{{ humanizePercentage $value }}", 0.123_456), "12.35%");
}

#[test]
fn humanize_duration_reads_seconds() {
    assert_eq!(r("{{ humanizeDuration $value }}", 90.0), "1m 30s");
    assert_eq!(r("{{ humanizeDuration $value }}", 3600.0), "1h 0m 0s");
    assert_eq!(r("{{ humanizeDuration $value }}", 183_600.0), "2d 3h 0m 0s");
    assert_eq!(r("{{ humanizeDuration $value }}", 1.5), "1.5s");
    assert_eq!(r("{{ humanizeDuration $value }}", 0.0), "0s");
    assert_eq!(r("{{ humanizeDuration $value }}", 0.25), "250ms");
    assert_eq!(r("{{ humanizeDuration $value }}", -90.0), "-1m 30s");
}

#[test]
fn check_refuses_what_render_cannot_do() {
    assert_eq!(
        check("{{ $labels.agent }} at {{ humanize $value }}"),
        Ok(())
    );
    assert_eq!(check("no expressions }} at all"), Ok(()));
    for bad in [
        "{{ $valu }}",
        "{{ humanise $value }}",
        "{{ $labels.bad-name }}",
        "{{ printf \"%d\" $value }}",
        "{{ }}",
        "{{- $value }}",
    ] {
        assert!(
            matches!(check(bad), Err(TemplateError::Unknown { .. })),
            "{bad}: {:?}",
            check(bad)
        );
    }
    assert_eq!(
        check("ok {{ $value"),
        Err(TemplateError::Unclosed { at: 3 })
    );
    assert!(matches!(
        check(&"x".repeat(MAX_TEMPLATE_LEN + 1)),
        Err(TemplateError::TooLong { .. })
    ));
}

#[test]
fn a_bad_template_renders_as_an_error_message() {
    let out = r("{{ nope }}", 1.0);
    assert!(out.starts_with("<error expanding template: "), "{out}");
}

#[test]
fn output_is_bounded() {
    let long = "{{ $labels.agent }}".repeat(MAX_TEMPLATE_LEN / 20);
    let big_value = "v".repeat(1000);
    let out = render(&long, &labels(&[("agent", &big_value)]), 0.0);
    assert_eq!(out.len(), MAX_RENDERED_LEN);
    let out = render(&"é".repeat(3000), &labels(&[]), 0.0);
    assert!(out.len() <= MAX_RENDERED_LEN && out.len() >= MAX_RENDERED_LEN - 1);
}
