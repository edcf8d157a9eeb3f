//! The `publish` CLI and the binary's flag errors.

use crate::support::{self, RedisServer, WsClient, cli};

#[test]
fn bad_flags_fail_with_a_clear_message() {
    let out = cli::run(&["serve", "--heartbeat-interval", "soon"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--heartbeat-interval"), "{err}");
}

// `progress-hub publish` through the HTTP API of a running hub, and straight into Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_cli_goes_through_the_publish_path_both_ways() {
    for backend in [support::Backend::Memory, support::Backend::Redis] {
        let hub = support::TestHub::start(backend).await;
        let mut client = WsClient::connected(&hub.ws_url("cli")).await;
        let hub_url = format!("http://{}", hub.addr);
        let redis_url = hub.redis.as_ref().map(RedisServer::url);
        let mut envs = vec![("HUB_URL", hub_url.as_str())];
        if let Some(url) = &redis_url {
            envs.push(("REDIS_URL", url.as_str()));
        }
        let commands: Vec<Vec<&str>> = vec![
            vec![
                "--project",
                "cli",
                "stage-change",
                "--current-stage",
                "RENDERING",
                "--progress",
                "60",
            ],
            vec![
                "--project",
                "cli",
                "progress-update",
                "--status",
                "RENDERING",
                "--progress",
                "65",
                "--current-stage",
                "渲染中",
                "--estimated-remaining",
                "30",
            ],
            vec![
                "--project",
                "cli",
                "log",
                "--level",
                "WARNING",
                "[3/15] 正在生成圖片",
            ],
            vec![
                "--project",
                "cli",
                "error",
                "--error-code",
                "RENDER_ERROR",
                "--message",
                "boom",
                "--stage",
                "RENDERING",
                "--retry-count",
                "1",
            ],
            vec![
                "--project",
                "cli",
                "complete",
                "--status",
                "COMPLETED",
                "--youtube-url",
                "https://youtube.com/watch?v=cli",
            ],
            vec![
                "--project",
                "cli",
                "json",
                r#"{"event":"log","data":{"level":"INFO","message":"raw"}}"#,
            ],
        ];
        let mut ids = Vec::new();
        for args in &commands {
            let out = cli::publish(args, &envs);
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            ids.push(String::from_utf8(out.stdout).unwrap().trim().to_string());
        }
        for (id, event) in ids.iter().zip([
            "stage_change",
            "progress_update",
            "log",
            "error",
            "complete",
            "log",
        ]) {
            let frame = client.next_event().await;
            assert_eq!(
                (frame["event"].as_str(), frame["id"].as_str()),
                (Some(event), Some(id.as_str())),
                "{backend:?}"
            );
            if event == "error" {
                assert_eq!(frame["data"]["is_retryable"], true);
                assert_eq!(frame["error"]["code"], "RENDER_ERROR");
            }
        }
        let bad = cli::publish(
            &[
                "--project",
                "cli",
                "progress-update",
                "--status",
                "RENDERING",
                "--progress",
                "120",
                "--current-stage",
                "x",
            ],
            &envs,
        );
        assert!(!bad.status.success());
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(err.contains("data.progress"), "{backend:?}: {err}");
    }
    let nowhere = cli::publish(
        &[
            "--project",
            "p",
            "--hub-url",
            "http://127.0.0.1:9",
            "log",
            "x",
        ],
        &[],
    );
    assert!(!nowhere.status.success());
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("unreachable"));
}

// `publish progress-update --units-done K --units-total N`: the count reaches the state;
// a count above its total is refused naming the field; one flag without the other is a
// flag error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_cli_sends_a_count_of_parallel_units() {
    let hub = support::TestHub::start(support::Backend::Memory).await;
    let hub_url = format!("http://{}", hub.addr);
    let envs = [("HUB_URL", hub_url.as_str())];
    let update = |done: &'static str, total: &'static str| {
        let mut args = vec![
            "--project",
            "cli-units",
            "progress-update",
            "--status",
            "ASSETS_GENERATING",
            "--progress",
            "40",
            "--current-stage",
            "assets",
        ];
        if !done.is_empty() {
            args.extend(["--units-done", done]);
        }
        if !total.is_empty() {
            args.extend(["--units-total", total]);
        }
        args
    };
    let out = cli::publish(&update("3", "17"), &envs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = hub.project_state("cli-units").await;
    assert_eq!(
        (state["units_done"].as_u64(), state["units_total"].as_u64()),
        (Some(3), Some(17)),
        "{state}"
    );
    let bad = cli::publish(&update("18", "17"), &envs);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("data.units_done"), "{err}");
    for half in [update("3", ""), update("", "17")] {
        let out = cli::publish(&half, &envs);
        assert!(!out.status.success(), "{half:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--units-"), "{half:?}: {err}");
    }
}
