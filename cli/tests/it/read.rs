//! The read side: `task get`, `agents`, `queues`, `dlq list`, and what
//! every command says when there is no dispatcher.

use crate::Fleet;

#[tokio::test]
async fn task_get_of_an_unknown_id_exits_2_with_not_found() {
    let fleet = Fleet::start(1).await;

    let run = fleet.run(&["task", "get", "no-such-task"]).await;

    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.starts_with("error: not_found: "), "{run:#?}");
}

#[tokio::test]
async fn task_get_shows_the_attempts_and_result_of_a_finished_task() {
    let fleet = Fleet::start(1).await;
    let submitted = fleet
        .run(&[
            "submit",
            "--tenant",
            "acme",
            "--id",
            "t1",
            "--payload",
            r#"{"op":"echo","data":"x"}"#,
            "--wait",
        ])
        .await;
    assert_eq!(submitted.code, 0, "{submitted:#?}");

    let record = fleet
        .poll_json(&["task", "get", "t1"], |r| r["status"] == "succeeded")
        .await;
    let human = fleet.run(&["task", "get", "t1"]).await;
    let other_tenant = fleet
        .run(&["task", "get", "t1", "--tenant", "globex"])
        .await;

    assert_eq!(record["attempts"][0]["agent"], "general-1");
    assert_eq!(record["result"], "x");
    assert!(human.stdout.starts_with("task t1  succeeded"), "{human:#?}");
    assert!(human.stdout.contains("#1 on general-1"), "{human:#?}");
    assert_eq!(other_tenant.code, 2, "{other_tenant:#?}");
}

#[tokio::test]
async fn agents_lists_every_running_agent() {
    let fleet = Fleet::start(2).await;

    let json = fleet.run(&["--json", "agents"]).await;
    let human = fleet.run(&["agents"]).await;

    assert_eq!(json.code, 0, "{json:#?}");
    let reply = json.json();
    let ids: Vec<&str> = reply["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["general-1", "general-2"]);
    let header = human.stdout.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("id") && header.contains("last seen"),
        "{human:#?}"
    );
    assert!(human.stdout.contains("0/16"), "{human:#?}");
}

#[tokio::test]
async fn queues_shows_the_queues_tasks_were_routed_to() {
    let fleet = Fleet::start(1).await;
    let run = fleet
        .run(&[
            "submit",
            "--tenant",
            "acme",
            "--requires",
            "general",
            "--payload",
            r#"{"op":"echo"}"#,
        ])
        .await;
    assert_eq!(run.code, 0, "{run:#?}");

    // The submit reply comes at intake; routing to the queue follows.
    let subjects = |reply: &serde_json::Value| -> Vec<String> {
        reply["queues"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|q| q["subject"].as_str().map(str::to_string))
            .collect()
    };
    fleet
        .poll_json(&["queues"], |r| {
            subjects(r).contains(&"clawfleet.queue.normal._.general.acme".to_string())
        })
        .await;
}

#[tokio::test]
async fn dlq_list_shows_a_task_that_failed_for_good() {
    let fleet = Fleet::start(1).await;
    let run = fleet
        .run(&[
            "submit",
            "--tenant",
            "acme",
            "--id",
            "bad",
            "--payload",
            r#"{"op":"fatal","message":"boom"}"#,
            "--wait",
        ])
        .await;
    assert_eq!(run.code, 1, "{run:#?}");

    let reply = fleet
        .poll_json(
            &["dlq", "list", "--tenant", "acme", "--reason", "failed"],
            |r| r["entries"][0].is_object(),
        )
        .await;
    let human = fleet.run(&["dlq", "list"]).await;

    let entries = reply["entries"].as_array().cloned().unwrap();
    assert_eq!(entries.len(), 1, "{reply}");
    assert_eq!(entries[0]["id"], "bad");
    assert_eq!(entries[0]["failure"]["message"], "boom");
    assert!(
        human.stdout.contains("failed") && human.stdout.contains("boom"),
        "{human:#?}"
    );
}

#[tokio::test]
async fn without_a_dispatcher_commands_say_so_and_exit_2() {
    let fleet = Fleet::bare();

    for args in [
        &["agents"][..],
        &["task", "get", "x"],
        &["submit", "--tenant", "acme", "--payload", "{}"],
    ] {
        let run = fleet.run(args).await;
        assert_eq!(run.code, 2, "{run:#?}");
        let expected = format!(
            "error: unavailable: no dispatcher is running at {}",
            fleet.server.url()
        );
        assert!(run.stderr.starts_with(&expected), "{run:#?}");
    }
}

#[tokio::test]
async fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;

    let fleet = Fleet::start(1).await;
    let submitted = fleet
        .run(&[
            "submit",
            "--tenant",
            "acme",
            "--id",
            "piped",
            "--payload",
            r#"{"op":"echo","data":"x"}"#,
            "--wait",
        ])
        .await;
    assert_eq!(submitted.code, 0, "{submitted:#?}");

    for args in [
        &["task", "get", "piped"][..],
        &["--json", "task", "get", "piped"],
        &["agents"],
        &["queues"],
        &["dlq", "list"],
    ] {
        let (status, stderr) = fleet.run_into_closed_pipe(args).await;
        // Like `cat` into a closed pipe: ended by SIGPIPE, nothing said.
        assert!(
            status.success() || status.signal() == Some(nix::libc::SIGPIPE),
            "clawfleet {args:?}: {status:?}, stderr {stderr:?}"
        );
        assert_eq!(stderr, "", "clawfleet {args:?}");
    }
}
