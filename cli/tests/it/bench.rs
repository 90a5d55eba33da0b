//! `clawfleet bench`: a tiny run, checked for the shape and the counts of
//! its report (never for speed), and for cleaning up after itself.

use futures::TryStreamExt;

use crate::Fleet;

#[tokio::test]
async fn a_small_bench_reports_every_phase_and_removes_its_streams() {
    // A bare server: the benchmark starts its own dispatcher and agents.
    let fleet = Fleet::bare();

    let run = fleet
        .run(&[
            "--json",
            "bench",
            "--tasks",
            "200",
            "--latency-tasks",
            "100",
            "--failover-kills",
            "2",
        ])
        .await;

    assert_eq!(run.code, 0, "{run:#?}");
    let r = run.json();
    assert_eq!(r["nats_url"], fleet.server.url(), "{r}");
    assert_eq!(r["own_server"], false, "{r}");
    assert_eq!(r["agents"], 8, "{r}");
    assert_eq!(r["raw"]["messages"], 200, "{r}");
    assert_eq!(r["raw"]["message_bytes"], 256, "{r}");
    assert_eq!(r["raw_jobs"]["jobs"], 200, "{r}");
    assert_eq!(r["clawfleet"]["tasks"], 200, "{r}");
    assert_eq!(r["clawfleet"]["task_bytes"], 256, "{r}");
    assert_eq!(r["clawfleet"]["succeeded"], 200, "{r}");
    assert_eq!(r["clawfleet"]["failed"], 0, "{r}");
    assert_eq!(r["latency"]["tasks"], 100, "{r}");
    assert_eq!(r["latency"]["failed"], 0, "{r}");
    for rate in [
        &r["raw"]["publish_per_sec"],
        &r["raw"]["round_trip_per_sec"],
        &r["raw_jobs"]["per_sec"],
        &r["clawfleet"]["per_sec"],
        &r["ratio"],
        &r["latency"]["target_per_sec"],
    ] {
        assert!(rate.as_f64().is_some_and(|v| v > 0.0), "{r}");
    }
    let (p50, p99, max) = (
        r["latency"]["p50_ms"].as_f64().expect("p50"),
        r["latency"]["p99_ms"].as_f64().expect("p99"),
        r["latency"]["max_ms"].as_f64().expect("max"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{r}");
    assert_eq!(r["failover"]["kills"], 2, "{r}");
    let (fo50, fomax) = (
        r["failover"]["p50_ms"].as_f64().expect("failover p50"),
        r["failover"]["max_ms"].as_f64().expect("failover max"),
    );
    assert!(0.0 < fo50 && fo50 <= fomax, "{r}");

    let js = async_nats::jetstream::new(fleet.server.client().await);
    let streams: Vec<String> = js.stream_names().try_collect().await.expect("stream names");
    assert!(
        streams.iter().all(|s| !s.starts_with("BENCH_")),
        "{streams:?}"
    );
}

#[tokio::test]
async fn a_small_log_bench_indexes_every_line_and_times_every_kind_of_search() {
    let fleet = Fleet::bare();

    let run = fleet
        .run(&[
            "--json",
            "bench",
            "logs",
            "--lines",
            "2000",
            "--searches",
            "3",
        ])
        .await;

    assert_eq!(run.code, 0, "{run:#?}");
    let r = run.json();
    assert_eq!(r["nats_url"], fleet.server.url(), "{r}");
    assert_eq!(r["lines"], 2000, "{r}");
    assert_eq!(r["search"].as_object().unwrap().len(), 6, "{r}");
    assert_eq!(r["search_all"]["count"], 18, "{r}");
    assert_eq!(r["search"]["one task"]["avg_lines"], 10.0, "{r}");
    for rate in [&r["publish_per_sec"], &r["ingest_per_sec"]] {
        assert!(rate.as_f64().is_some_and(|v| v > 0.0), "{r}");
    }
    assert!(r["index_bytes"].as_u64().is_some_and(|b| b > 0), "{r}");
}
