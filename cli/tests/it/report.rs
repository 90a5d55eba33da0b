//! `clawfleet report` and `clawfleet cost`: which service they need, and
//! what they say about the price table.

use clawfleet_testkit::{log_aggregator_config, start_log_aggregator};

use crate::Fleet;

#[tokio::test]
async fn report_and_cost_without_a_log_aggregator_say_that_one_is_missing() {
    let fleet = Fleet::start(1).await;

    for command in ["report", "cost"] {
        let run = fleet.run(&[command]).await;

        assert_eq!(run.code, 2, "{run:#?}");
        assert!(
            run.stderr
                .starts_with("error: unavailable: no log aggregator is running at "),
            "{run:#?}"
        );
    }
}

#[tokio::test]
async fn cost_and_report_say_when_no_price_table_is_configured() {
    let fleet = Fleet::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let aggregator =
        start_log_aggregator(log_aggregator_config(fleet.server.url(), dir.path())).await;

    let cost = fleet.poll_json(&["cost"], |_| true).await;
    assert_eq!(cost["priced"], false, "{cost}");
    for command in ["cost", "report"] {
        let run = fleet.run(&[command]).await;
        assert_eq!(run.code, 0, "{run:#?}");
        assert!(
            run.stdout
                .contains("No price table is configured, so every cost is 0")
                && run.stdout.contains("clawfleet up --prices FILE"),
            "{run:#?}"
        );
    }
    aggregator.stop().await;

    let mut priced = log_aggregator_config(fleet.server.url(), dir.path());
    priced.analytics.prices.per_agent_hour = 3.0;
    let _aggregator = start_log_aggregator(priced).await;
    let cost = fleet.poll_json(&["cost"], |_| true).await;
    assert_eq!(cost["priced"], true, "{cost}");
    let run = fleet.run(&["cost"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(!run.stdout.contains("No price table"), "{run:#?}");
}
